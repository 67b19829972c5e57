//! `holdfast signer add|list|keygen`: parse, call `holdfast_ops::signers`,
//! print.

use anyhow::Result;
use holdfast_ops::signers::{self, NewSigner};
use serde_json::json;

use crate::args::{Global, SignerAddArgs, SignerCommand};
use crate::{exit, open, ui};

pub fn run(g: &Global, rt: &tokio::runtime::Runtime, c: SignerCommand) -> Result<i32> {
    match c {
        SignerCommand::Add(a) => add(g, rt, a),
        SignerCommand::List => list(g, rt),
        SignerCommand::Keygen { out } => keygen(g, &out),
    }
}

fn add(g: &Global, rt: &tokio::runtime::Runtime, a: SignerAddArgs) -> Result<i32> {
    let repo = open::open(g, rt)?;
    let s = signers::add(
        &repo,
        &NewSigner {
            name: a.name,
            printed_name: a.printed_name,
            public_key: a.public_key,
        },
    )?;
    let fingerprint = s.fingerprint()?;
    if g.json {
        ui::print_json(&json!({
            "name": s.name,
            "printed_name": s.printed_name,
            "fingerprint": fingerprint,
        }))?;
    } else if !g.quiet {
        outln!(
            "registered signer {} ({}), key {}",
            ui::escape(s.name.as_bytes()),
            ui::escape(s.printed_name.as_bytes()),
            fingerprint.get(..16).unwrap_or(&fingerprint)
        );
    }
    Ok(exit::OK)
}

fn list(g: &Global, rt: &tokio::runtime::Runtime) -> Result<i32> {
    let repo = open::open(g, rt)?;
    let (all, unreadable) = signers::list(&repo)?;
    for (name, why) in &unreadable {
        errln!("holdfast: warning: signers/{name}: {why}");
    }
    if g.json {
        let list: Vec<_> = all
            .iter()
            .map(|(_, s)| {
                json!({
                    "name": s.name,
                    "printed_name": s.printed_name,
                    "fingerprint": s.fingerprint().ok(),
                    "added": s.added,
                    "added_by": s.added_by,
                })
            })
            .collect();
        ui::print_json(&list)?;
    } else {
        for (_, s) in &all {
            outln!(
                "{:<16}  {:<28}  key {}  added {} by {}",
                ui::escape(s.name.as_bytes()),
                ui::escape(s.printed_name.as_bytes()),
                s.fingerprint()
                    .map(|f| f.get(..16).unwrap_or(&f).to_string())
                    .unwrap_or_else(|e| e.to_string()),
                s.added.format("%Y-%m-%d %H:%M:%S"),
                ui::escape(s.added_by.as_bytes())
            );
        }
    }
    Ok(exit::OK)
}

fn keygen(g: &Global, out: &std::path::Path) -> Result<i32> {
    let pair = signers::keygen(out)?;
    if g.json {
        ui::print_json(&json!({
            "private_key": pair.private,
            "public_key": pair.public,
            "fingerprint": pair.fingerprint,
        }))?;
    } else if !g.quiet {
        outln!(
            "private key {} (keep it to yourself), public key {} (give it to `holdfast signer add`), fingerprint {}",
            pair.private.display(),
            pair.public.display(),
            pair.fingerprint.get(..16).unwrap_or(&pair.fingerprint)
        );
    }
    Ok(exit::OK)
}
