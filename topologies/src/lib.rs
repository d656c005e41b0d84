//! Scenario files, topology generators and validation (to come: scenario issue).
