//! Raw serde structs of the TOML config file (unknown keys are errors).
