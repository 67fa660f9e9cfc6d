//! Providers' API keys at rest: AES-256-GCM with the key from
//! `RELAIS_ASSISTANT_ENCRYPTION_KEY`, a fresh nonce per key, and the
//! provider's tenant and id as associated data (a ciphertext copied to
//! another provider row does not decrypt).

use aes_gcm::{
    Aes256Gcm, Key, Nonce,
    aead::{Aead, AeadCore, KeyInit, OsRng, Payload},
};
use base64::Engine;

const NONCE: usize = 12;

#[derive(Clone)]
pub struct Cipher(Aes256Gcm);

impl Cipher {
    pub fn new(key: &[u8; 32]) -> Cipher {
        Cipher(Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key)))
    }

    /// `base64(nonce || ciphertext)`.
    pub fn seal(&self, plain: &str, context: &str) -> anyhow::Result<String> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = self
            .0
            .encrypt(
                &nonce,
                Payload {
                    msg: plain.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("encryption failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(base64::engine::general_purpose::STANDARD.encode(out))
    }

    pub fn open(&self, sealed: &str, context: &str) -> anyhow::Result<String> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(sealed)?;
        anyhow::ensure!(bytes.len() > NONCE, "sealed key too short");
        let (nonce, ciphertext) = bytes.split_at(NONCE);
        let nonce = Nonce::from(<[u8; NONCE]>::try_from(nonce)?);
        let plain = self
            .0
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("the key does not decrypt (wrong encryption key?)"))?;
        Ok(String::from_utf8(plain)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_only_with_their_context_and_never_appear_in_clear() {
        let cipher = Cipher::new(&[7; 32]);
        let sealed = cipher.seal("sk-secret-123", "t1/p1").unwrap();
        assert!(!sealed.contains("sk-secret"));
        assert_eq!(cipher.open(&sealed, "t1/p1").unwrap(), "sk-secret-123");
        assert!(cipher.open(&sealed, "t1/p2").is_err());
        assert!(Cipher::new(&[8; 32]).open(&sealed, "t1/p1").is_err());
        assert_ne!(sealed, cipher.seal("sk-secret-123", "t1/p1").unwrap());
    }
}
