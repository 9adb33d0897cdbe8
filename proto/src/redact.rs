//! Redacting `Debug` for the messages that carry secrets (passphrases, shares, plaintext, keys).
//!
//! prost derives `Debug` for every other message; these are excluded in `build.rs`, so even an
//! accidental `{:?}` of a request or response prints lengths, never contents.

use std::fmt;

use crate::v1::*;

/// Prints `<N bytes redacted>` for a secret field.
struct Redacted(usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes redacted>", self.0)
    }
}

impl fmt::Debug for PassphraseMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassphraseMode")
            .field("passphrase", &Redacted(self.passphrase.len()))
            .finish()
    }
}

impl fmt::Debug for SharesMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharesMode")
            .field("threshold", &self.threshold)
            .field("custodian_passphrases", &self.custodian_passphrases.len())
            .finish()
    }
}

impl fmt::Debug for UnsealRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnsealRequest")
            .field("passphrase", &Redacted(self.passphrase.len()))
            .field("share", &Redacted(self.share.len()))
            .finish()
    }
}

impl fmt::Debug for RekeyRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RekeyRequest")
            .field("old_passphrase", &Redacted(self.old_passphrase.len()))
            .field("old_shares", &self.old_shares)
            .field("new_config", &self.new_config)
            .finish()
    }
}

impl fmt::Debug for RekeyCommitRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RekeyCommitRequest")
            .field("staging_id", &self.staging_id)
            .field("new_passphrase", &Redacted(self.new_passphrase.len()))
            .field("shares", &self.shares)
            .finish()
    }
}

impl fmt::Debug for ShareSubmission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShareSubmission")
            .field("share", &Redacted(self.share.len()))
            .field("passphrase", &Redacted(self.passphrase.len()))
            .finish()
    }
}

impl fmt::Debug for EncryptedShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedShare")
            .field("index", &self.index)
            .field("share", &Redacted(self.share.len()))
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl fmt::Debug for NewImportKeyResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewImportKeyResponse")
            .field("import_key_id", &self.import_key_id)
            .field("import_key", &Redacted(self.import_key.len()))
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

impl fmt::Debug for ImportKeyRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportKeyRequest")
            .field("key_id", &self.key_id)
            .field("usage", &self.usage)
            .field("labels", &self.labels)
            .field("import_key_id", &self.import_key_id)
            .field("wrapped_key", &Redacted(self.wrapped_key.len()))
            .finish()
    }
}

impl fmt::Debug for EncryptRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptRequest")
            .field("key_id", &self.key_id)
            .field("plaintext", &Redacted(self.plaintext.len()))
            .field("aad", &Redacted(self.aad.len()))
            .field("request_id", &self.request_id)
            .field("integrity_check", &self.integrity_check)
            .finish()
    }
}

impl fmt::Debug for DecryptResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptResponse")
            .field("plaintext", &Redacted(self.plaintext.len()))
            .finish()
    }
}

impl fmt::Debug for WrapKeyRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrapKeyRequest")
            .field("key_id", &self.key_id)
            .field("key_material", &Redacted(self.key_material.len()))
            .field("request_id", &self.request_id)
            .finish()
    }
}

impl fmt::Debug for UnwrapKeyResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnwrapKeyResponse")
            .field("key_material", &Redacted(self.key_material.len()))
            .finish()
    }
}

impl fmt::Debug for GenerateRandomResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenerateRandomResponse")
            .field("random", &Redacted(self.random.len()))
            .finish()
    }
}

impl fmt::Debug for CreateBackupResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateBackupResponse")
            .field("backup", &Redacted(self.backup.len()))
            .field("sha256", &self.sha256)
            .finish()
    }
}

impl fmt::Debug for RestoreBackupRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestoreBackupRequest")
            .field("backup", &Redacted(self.backup.len()))
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const SECRET: &str = "hunter2-correct-horse";

    fn assert_hidden(debug: String) {
        assert!(!debug.contains(SECRET), "secret in Debug: {debug}");
        assert!(
            !debug.contains("104, 117, 110"),
            "secret bytes in Debug: {debug}"
        );
    }

    #[test]
    fn secret_fields_never_appear_in_debug() {
        let bytes = SECRET.as_bytes().to_vec();
        let init = InitRequest {
            mode: Some(init_request::Mode::Passphrase(PassphraseMode {
                passphrase: SECRET.into(),
            })),
        };
        assert_hidden(format!("{init:?}"));
        let shares = InitRequest {
            mode: Some(init_request::Mode::Shares(SharesMode {
                threshold: 2,
                custodian_passphrases: vec![SECRET.into(), SECRET.into()],
            })),
        };
        assert_hidden(format!("{shares:?}"));
        assert_hidden(format!(
            "{:?}",
            UnsealRequest {
                passphrase: SECRET.into(),
                share: bytes.clone()
            }
        ));
        assert_hidden(format!(
            "{:?}",
            RekeyRequest {
                old_passphrase: SECRET.into(),
                old_shares: vec![ShareSubmission {
                    share: bytes.clone(),
                    passphrase: SECRET.into()
                }],
                new_config: Some(init.clone()),
            }
        ));
        let commit = format!(
            "{:?}",
            RekeyCommitRequest {
                staging_id: "5eed".into(),
                new_passphrase: SECRET.into(),
                shares: vec![ShareSubmission {
                    share: bytes.clone(),
                    passphrase: SECRET.into()
                }],
            }
        );
        assert_hidden(commit.clone());
        assert!(commit.contains("5eed"), "{commit}");
        assert_hidden(format!(
            "{:?}",
            RekeyStageResponse {
                shares: vec![EncryptedShare {
                    index: 1,
                    share: bytes.clone(),
                    fingerprint: "f".into()
                }],
                staging_id: "5eed".into(),
                ..Default::default()
            }
        ));
        assert_hidden(format!(
            "{:?}",
            EncryptRequest {
                key_id: "k".into(),
                plaintext: bytes.clone(),
                aad: bytes.clone(),
                request_id: "r".into(),
                integrity_check: true
            }
        ));
        assert_hidden(format!(
            "{:?}",
            DecryptResponse {
                plaintext: bytes.clone()
            }
        ));
        assert_hidden(format!(
            "{:?}",
            NewImportKeyResponse {
                import_key_id: "i".into(),
                import_key: bytes.clone(),
                expires_at_ms: 1
            }
        ));
        assert_hidden(format!(
            "{:?}",
            UnwrapKeyResponse {
                key_material: bytes.clone()
            }
        ));
        assert_hidden(format!(
            "{:?}",
            WrapKeyRequest {
                key_id: "k".into(),
                key_material: bytes.clone(),
                request_id: "r".into()
            }
        ));
        assert_hidden(format!(
            "{:?}",
            GenerateRandomResponse {
                random: bytes.clone()
            }
        ));
        let shown = format!(
            "{:?}",
            EncryptedShare {
                index: 3,
                share: bytes,
                fingerprint: "ab12".into()
            }
        );
        assert_hidden(shown.clone());
        assert!(
            shown.contains("ab12") && shown.contains("21 bytes redacted"),
            "{shown}"
        );
    }
}
