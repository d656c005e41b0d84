//! Result files to statistics, figures and reports (to come: reports issue).
