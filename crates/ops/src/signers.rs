//! Electronic signatures (21 CFR 11.50, 11.70, 11.200) in the application
//! layer: registering signers, making key pairs, and recording signed
//! audit entries (see `holdfast_repo::audit::sign` for what is signed).
//!
//! A signer signs with a private key file that only they can read (a
//! file readable by its group or others is refused: a signature must be
//! unique to one individual, 11.100 and 11.300). The signer is identified
//! by the key itself: the registered signer whose public key it is.
//!
//! For front ends and other operations (drill approval):
//!
//! ```text
//! let signing = signers::signing(repo, &signers::read_signing_key(path)?)?;
//! signers::record_signed(repo, &draft, &signing, "approval of drill report D-3")?;
//! ```

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use holdfast_repo::audit::sign::{self, Signer, SigningKey};
use holdfast_repo::audit::signers::{check_name, SIGNER_VERSION};
use holdfast_repo::audit::{Draft, Outcome, Stored};
use holdfast_repo::records::Records;
use holdfast_repo::Repository;

use crate::audit;
use crate::error::{OpsError, Result};

/// A signer to register.
#[derive(Debug, Clone)]
pub struct NewSigner {
    /// The registered name (`jroe`).
    pub name: String,
    /// The full name printed on signed entries (default: the name).
    pub printed_name: Option<String>,
    /// The ed25519 public key file (PEM `PUBLIC KEY` or `ssh-ed25519`).
    pub public_key: PathBuf,
}

/// Register a signer; audited as `signer add`.
pub fn add(repo: &Repository, cfg: &NewSigner) -> Result<Signer> {
    check_name(&cfg.name)?;
    let printed_name = cfg
        .printed_name
        .as_deref()
        .map(str::trim)
        .unwrap_or(&cfg.name)
        .to_string();
    if printed_name.is_empty() || printed_name.chars().any(char::is_control) {
        return Err(OpsError::invalid(
            "--printed-name must be a non-empty name without control characters",
        ));
    }
    let bytes = std::fs::read(&cfg.public_key).map_err(|cause| OpsError::Io {
        context: format!("reading public key {}", cfg.public_key.display()),
        cause,
    })?;
    let key = sign::parse_public_key(&bytes, &format!("{}", cfg.public_key.display()))?;
    let signer = Signer {
        version: SIGNER_VERSION,
        name: cfg.name.clone(),
        printed_name,
        public_key: hex::encode(key),
        added: repo.now(),
        added_by: repo.audit_actor(),
    };
    let draft = Draft::new("signer add", Outcome::Success)
        .arg("printed_name", signer.printed_name.clone())
        .arg("key", sign::fingerprint(&key))
        .touch("signer", signer.name.clone());
    audit::audited(
        repo,
        draft,
        || Ok(repo.put_signer(&signer).map(|()| signer.clone())?),
        |_, d| d,
    )
}

/// Every registered signer, and the records that do not open (with why).
pub fn list(repo: &Repository) -> Result<Records<Signer>> {
    Ok(repo.signers()?)
}

/// The files `keygen` wrote.
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// The private key (PEM PKCS#8, mode 0600).
    pub private: PathBuf,
    /// The public key (PEM), `<private>.pub`.
    pub public: PathBuf,
    /// BLAKE3 of the public key, hex.
    pub fingerprint: String,
}

/// Make a new ed25519 key pair: the private key at `out` (mode 0600,
/// never over an existing file) and the public key at `out.pub`.
pub fn keygen(out: &Path) -> Result<KeyPair> {
    let (key, pem) = SigningKey::generate()?;
    let mut public = out.as_os_str().to_owned();
    public.push(".pub");
    let public = PathBuf::from(public);
    write_new(out, pem.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&public, key.public_pem().as_bytes(), 0o644) {
        let _ = std::fs::remove_file(out);
        return Err(e);
    }
    Ok(KeyPair {
        private: out.to_path_buf(),
        public,
        fingerprint: sign::fingerprint(&key.public_key()),
    })
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let io = |cause| OpsError::Io {
        context: format!("creating {}", path.display()),
        cause,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    if let Err(cause) = f.write_all(bytes).and_then(|()| f.sync_all()) {
        let _ = std::fs::remove_file(path);
        return Err(OpsError::Io {
            context: format!("writing {}", path.display()),
            cause,
        });
    }
    Ok(())
}

/// Read a private signing key file; refused if its group or others can
/// read it.
pub fn read_signing_key(path: &Path) -> Result<SigningKey> {
    if let Some(w) = crate::secrets::exposure(path, "signing key") {
        return Err(OpsError::invalid(format!(
            "refusing to sign: {w} (a signing key must be readable by its owner alone)"
        )));
    }
    let bytes = std::fs::read(path).map_err(|cause| OpsError::Io {
        context: format!("reading signing key {}", path.display()),
        cause,
    })?;
    Ok(SigningKey::from_pem(
        &bytes,
        &format!("signing key {}", path.display()),
    )?)
}

/// A signing key and the registered signer it belongs to.
pub struct Signing {
    pub key: SigningKey,
    pub signer: Signer,
}

/// The registered signer of `key`; refused if it is nobody's.
pub fn signing(repo: &Repository, key: SigningKey) -> Result<Signing> {
    let public = key.public_key();
    match repo.signer_with_key(&public)? {
        Some(signer) => Ok(Signing { key, signer }),
        None => {
            let fp = sign::fingerprint(&public);
            Err(OpsError::invalid(format!(
                "the signing key (fingerprint {}) is not a registered signer's: register its public key with `holdfast signer add NAME --public-key FILE`",
                fp.get(..16).unwrap_or(&fp)
            )))
        }
    }
}

/// Append `draft` as an entry signed by `signing`, meaning `meaning`
/// (shown with the signer's printed name and the entry's time).
pub fn record_signed(
    repo: &Repository,
    draft: &Draft,
    signing: &Signing,
    meaning: &str,
) -> Result<Stored> {
    repo.audit_append(draft, Some((&signing.key, &signing.signer, meaning)))
        .map_err(|e| {
            OpsError::from(e).context(format!(
                "writing the signed audit entry of {}",
                draft.operation
            ))
        })
}
