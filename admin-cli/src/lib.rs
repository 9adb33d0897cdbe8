//! vhsm-admin library: ceremonies, key operations and PKI for the vhsm appliance.
#![forbid(unsafe_code)]
