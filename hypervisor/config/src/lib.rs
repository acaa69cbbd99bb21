//! Parser and validator for the qvm-syntax system configuration (in progress).
