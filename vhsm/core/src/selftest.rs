//! Power-on known-answer self-tests that must pass before the store will unseal.
