//! xks-front library: the XKS Proxy API v1 router, SigV4, policy, throttling, health, vhsm client.
#![forbid(unsafe_code)]
