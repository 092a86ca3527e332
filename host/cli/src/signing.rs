//! `keygen`, `sign`, `verify`: the operator side of signed components.

use std::path::Path;
use std::time::SystemTime;

use anyhow::{bail, Context};
use edgegate_trust::{
    sign_component, verify_component, RevocationList, SigningKey, TrustStore, VerifyOptions,
};

/// Largest component read.
const MAX_COMPONENT_BYTES: u64 = 64 << 20;

fn read_component(path: &Path) -> anyhow::Result<Vec<u8>> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.len() > MAX_COMPONENT_BYTES {
        bail!(
            "{}: {} bytes is over the {MAX_COMPONENT_BYTES}-byte limit",
            path.display(),
            meta.len()
        );
    }
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Write a file through a temporary sibling and a rename, so readers never see half of it.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp-edgegate");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

pub fn keygen(dir: &Path, kinds: &[String]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = edgegate_trust::generate_key();
    let id = key.key_id();
    let secret = dir.join(format!("{id}.secret"));
    let public = dir.join(format!("{id}.public"));
    let trust = dir.join("trust.toml");
    write_atomic(&secret, key.secret_pem().as_bytes(), 0o600)?;
    write_atomic(&public, key.public_pem().as_bytes(), 0o644)?;
    write_atomic(
        &trust,
        TrustStore::render_single(&id, &key.public_pem(), kinds).as_bytes(),
        0o644,
    )?;
    println!("key id {id}");
    println!("secret key  {}", secret.display());
    println!("public key  {}", public.display());
    println!("trust store {}", trust.display());
    Ok(())
}

pub fn sign(key: &Path, component: &Path, out: Option<&Path>) -> anyhow::Result<()> {
    let pem = std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?;
    let key = SigningKey::from_pem(&pem).with_context(|| format!("{}", key.display()))?;
    let bytes = read_component(component)?;
    let signed =
        sign_component(&bytes, &key).with_context(|| format!("{}", component.display()))?;
    let target = out.unwrap_or(component);
    write_atomic(target, &signed, 0o644)?;
    println!("signed {} with key {}", target.display(), key.key_id());
    Ok(())
}

pub fn verify(
    trust: &Path,
    kind: &str,
    signers: usize,
    revocations: Option<&Path>,
    component: &Path,
) -> anyhow::Result<()> {
    let store = TrustStore::load(trust)?;
    let list = match revocations {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Some(RevocationList::verify(path, &text, &store)?)
        }
        None => None,
    };
    let bytes = read_component(component)?;
    let opts = VerifyOptions {
        kind,
        required_signers: signers,
        sha256_pin: None,
        now: SystemTime::now(),
        revocations: list.as_ref(),
    };
    match verify_component(&bytes, &store, &opts) {
        Ok(v) => {
            // The content digest, not the file's sha256: what `--revoke-digest`,
            // `policies.NAME.sha256` and `[fleet] components` take.
            println!(
                "{}: trusted, signed by {} (content sha256 {})",
                component.display(),
                v.key_ids.join(", "),
                v.digest
            );
            Ok(())
        }
        Err(refusal) => bail!("{}: refused: {refusal}", component.display()),
    }
}

pub fn revoke(
    key: &Path,
    version: u64,
    keys: Vec<String>,
    digests: Vec<String>,
    out: &Path,
) -> anyhow::Result<()> {
    let pem = std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?;
    let key = SigningKey::from_pem(&pem).with_context(|| format!("{}", key.display()))?;
    for d in &digests {
        if d.len() != 64 || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("--revoke-digest {d}: not a hex sha256 (the content sha256 `edgegate verify` prints)");
        }
    }
    let list = RevocationList {
        version,
        revoked_keys: keys.into_iter().collect(),
        revoked_digests: digests
            .into_iter()
            .map(|d| d.to_ascii_lowercase())
            .collect(),
    };
    write_atomic(out, list.sign(&key)?.as_bytes(), 0o644)?;
    println!(
        "revocation list version {version} signed by {} → {}",
        key.key_id(),
        out.display()
    );
    Ok(())
}
