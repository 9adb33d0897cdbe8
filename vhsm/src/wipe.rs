//! Zeroizes the secret fields of request messages that are dropped without being used
//! (e.g. a denied call), so passphrases, shares and plaintext do not linger in freed memory;
//! and scrubs the stack a secret-handling call used ([`scrub_stack`]).

use vhsm_proto::v1::{
    init_request, AddNodeRequest, ClusterStatusRequest, CreateBackupRequest, CreateKeyRequest,
    DecideProposalRequest, DecryptRequest, EncryptRequest, ExportAuditRequest,
    GenerateRandomRequest, GetApprovalPolicyRequest, GetAuditPublicKeyRequest,
    GetKeyMetadataRequest, GetProposalRequest, HealthRequest, ImportKeyRequest, InitRequest,
    KeyIdRequest, KeyProvenanceRequest, ListKeysRequest, ListProposalsRequest, NewImportKeyRequest,
    ProposeRequest, RekeyAbortRequest, RekeyCommitRequest, RekeyRequest, RemoveNodeRequest,
    ResetUnsealRequest, RestoreBackupRequest, ScheduleKeyDeletionRequest, SealRequest,
    SetApprovalPolicyRequest, SetMinDecryptionVersionRequest, StatusRequest, UnsealRequest,
    UnwrapKeyRequest, WrapKeyRequest,
};
use zeroize::Zeroize;

/// Bytes of stack [`scrub_stack`] overwrites: more than the deepest call into the core uses
/// (the key copies the end-to-end memory test found sat within 32 KiB of the frame that
/// called the core).
pub const STACK_SCRUB_BYTES: usize = 128 * 1024;

/// Overwrites [`STACK_SCRUB_BYTES`] of this thread's stack below the caller's frame with
/// zeros. Values moved by copy (a key, a derived key, a share) leave copies in the stack frames
/// of the calls that handled them, which no destructor reaches; call this after such a call
/// returns, at about the depth it was made from. The blocking-pool threads vhsmd runs
/// ceremonies on have 2 MiB stacks (tokio's default).
#[inline(never)]
pub fn scrub_stack() {
    let mut area = [0u8; STACK_SCRUB_BYTES];
    // Opaque to the optimizer: the zeroing cannot be elided.
    std::hint::black_box(&mut area);
}

/// A request message whose secret fields can be wiped in place.
pub trait Wipe {
    /// Zeroizes every secret field (no-op for messages without secrets).
    fn wipe(&mut self);
}

macro_rules! no_secrets {
    ($($t:ty),* $(,)?) => {
        $(impl Wipe for $t {
            fn wipe(&mut self) {}
        })*
    };
}

no_secrets!(
    (),
    StatusRequest,
    ResetUnsealRequest,
    RekeyAbortRequest,
    SealRequest,
    CreateKeyRequest,
    NewImportKeyRequest,
    ListKeysRequest,
    KeyIdRequest,
    SetMinDecryptionVersionRequest,
    ScheduleKeyDeletionRequest,
    CreateBackupRequest,
    ExportAuditRequest,
    GetAuditPublicKeyRequest,
    KeyProvenanceRequest,
    GetKeyMetadataRequest,
    GenerateRandomRequest,
    HealthRequest,
    DecryptRequest,
    UnwrapKeyRequest,
    RestoreBackupRequest,
    ImportKeyRequest,
    ClusterStatusRequest,
    AddNodeRequest,
    RemoveNodeRequest,
    GetApprovalPolicyRequest,
    SetApprovalPolicyRequest,
    ProposeRequest,
    ListProposalsRequest,
    GetProposalRequest,
    DecideProposalRequest,
);

impl Wipe for InitRequest {
    fn wipe(&mut self) {
        match &mut self.mode {
            Some(init_request::Mode::Passphrase(p)) => p.passphrase.zeroize(),
            Some(init_request::Mode::Shares(s)) => {
                s.custodian_passphrases
                    .iter_mut()
                    .for_each(Zeroize::zeroize);
            }
            None => {}
        }
    }
}

impl Wipe for UnsealRequest {
    fn wipe(&mut self) {
        self.passphrase.zeroize();
        self.share.zeroize();
    }
}

impl Wipe for RekeyRequest {
    fn wipe(&mut self) {
        self.old_passphrase.zeroize();
        for s in &mut self.old_shares {
            s.passphrase.zeroize();
            s.share.zeroize();
        }
        if let Some(n) = &mut self.new_config {
            n.wipe();
        }
    }
}

impl Wipe for RekeyCommitRequest {
    fn wipe(&mut self) {
        self.new_passphrase.zeroize();
        for s in &mut self.shares {
            s.passphrase.zeroize();
            s.share.zeroize();
        }
    }
}

impl Wipe for EncryptRequest {
    fn wipe(&mut self) {
        self.plaintext.zeroize();
    }
}

impl Wipe for WrapKeyRequest {
    fn wipe(&mut self) {
        self.key_material.zeroize();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use vhsm_proto::v1::{PassphraseMode, ShareSubmission, SharesMode};

    #[test]
    fn secrets_are_wiped() {
        let mut u = UnsealRequest {
            passphrase: "pw".into(),
            share: vec![1, 2, 3],
        };
        u.wipe();
        assert!(u.passphrase.is_empty() && u.share.is_empty());

        let mut i = InitRequest {
            mode: Some(init_request::Mode::Shares(SharesMode {
                threshold: 1,
                custodian_passphrases: vec!["a".into(), "b".into()],
            })),
        };
        i.wipe();
        let Some(init_request::Mode::Shares(s)) = &i.mode else {
            panic!("mode changed")
        };
        assert!(s.custodian_passphrases.iter().all(String::is_empty));

        let mut r = RekeyRequest {
            old_passphrase: "old".into(),
            old_shares: vec![ShareSubmission {
                share: vec![9],
                passphrase: "p".into(),
            }],
            new_config: Some(InitRequest {
                mode: Some(init_request::Mode::Passphrase(PassphraseMode {
                    passphrase: "new".into(),
                })),
            }),
        };
        r.wipe();
        assert!(r.old_passphrase.is_empty());

        let mut c = RekeyCommitRequest {
            staging_id: "id".into(),
            new_passphrase: "new".into(),
            shares: vec![ShareSubmission {
                share: vec![9],
                passphrase: "p".into(),
            }],
        };
        c.wipe();
        assert!(c.new_passphrase.is_empty());
        assert!(c.shares[0].share.is_empty() && c.shares[0].passphrase.is_empty());
        assert_eq!(c.staging_id, "id");
        assert!(r.old_shares[0].share.is_empty() && r.old_shares[0].passphrase.is_empty());
        let Some(InitRequest {
            mode: Some(init_request::Mode::Passphrase(p)),
        }) = &r.new_config
        else {
            panic!("mode changed")
        };
        assert!(p.passphrase.is_empty());

        let mut e = EncryptRequest {
            plaintext: b"secret".to_vec(),
            key_id: String::new(),
            aad: Vec::new(),
            request_id: String::new(),
            integrity_check: false,
        };
        e.wipe();
        assert!(e.plaintext.is_empty());
        let mut w = WrapKeyRequest {
            key_material: vec![7; 32],
            key_id: String::new(),
            request_id: String::new(),
        };
        w.wipe();
        assert!(w.key_material.is_empty());
    }
}
