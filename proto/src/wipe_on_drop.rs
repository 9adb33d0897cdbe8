//! Zeroizes the secret fields of the messages that carry them when a message is dropped.
//!
//! tonic takes request and response messages by value, encodes them and drops them; without
//! this, each call would leave the plaintext (or key, passphrase, share) it carried in freed
//! heap memory. The bytes prost and tonic copy the message into (encode and decode buffers)
//! are theirs and are not covered: see docs/threat-model.md, "Secrets in memory".
//!
//! A message with a `Drop` impl cannot be taken apart by moving its fields out: take a field
//! with `std::mem::take(&mut msg.field)` instead.

use zeroize::Zeroize;

use crate::v1::*;

macro_rules! wipe_on_drop {
    ($($t:ty => [$($field:ident),+]),* $(,)?) => {
        $(impl $t {
            /// Zeroizes (and empties) the secret fields; dropping the message does this too.
            pub fn zeroize_secrets(&mut self) {
                $(self.$field.zeroize();)+
            }
        }
        impl Drop for $t {
            fn drop(&mut self) {
                self.zeroize_secrets();
            }
        })*
    };
}

wipe_on_drop!(
    PassphraseMode => [passphrase],
    SharesMode => [custodian_passphrases],
    UnsealRequest => [passphrase, share],
    RekeyRequest => [old_passphrase],
    RekeyCommitRequest => [new_passphrase],
    ShareSubmission => [share, passphrase],
    NewImportKeyResponse => [import_key],
    EncryptRequest => [plaintext],
    DecryptResponse => [plaintext],
    WrapKeyRequest => [key_material],
    UnwrapKeyResponse => [key_material],
    GenerateRandomResponse => [random],
);

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    // What `drop` runs (`zeroize_secrets`), observed before the memory is freed: reading
    // freed memory would need unsafe code; the end-to-end test tests/tests/memory.rs looks
    // at the freed memory of the real daemons.
    #[test]
    fn drop_zeroizes_secret_fields() {
        let mut d = DecryptResponse {
            plaintext: b"secret plaintext".to_vec(),
        };
        d.zeroize_secrets();
        assert!(d.plaintext.is_empty());
        let mut e = EncryptRequest {
            key_id: "k".into(),
            plaintext: vec![7; 64],
            aad: vec![1],
            request_id: String::new(),
            integrity_check: false,
        };
        e.zeroize_secrets();
        assert!(e.plaintext.is_empty());
        assert_eq!((e.key_id.as_str(), e.aad.as_slice()), ("k", &[1u8][..]));
        let mut u = UnsealRequest {
            passphrase: "pw".into(),
            share: vec![1, 2],
        };
        u.zeroize_secrets();
        assert!(u.passphrase.is_empty() && u.share.is_empty());
    }
}
