//! The operator packaging in examples/: the Kubernetes manifests pass
//! `kubernetes-validate --strict` (PyPI, offline schemas), the
//! ServiceMonitor (a CRD it has no schema for) passes the strict schema
//! shipped next to it, broken copies fail both (so neither check passes by
//! not looking); the systemd units pass `systemd-analyze verify`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn venv_bin(name: &str) -> PathBuf {
    let p = root().join(".venv/bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: scripts/test.sh installs kubernetes-validate into .venv",
        p.display()
    );
    p
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const K8S_VERSION: &str = "1.30.0";

fn kubernetes_validate(files: &[PathBuf]) -> Output {
    Command::new(venv_bin("kubernetes-validate"))
        .args(["--strict", "-k", K8S_VERSION])
        .args(files)
        .output()
        .expect("run kubernetes-validate")
}

const CRD_CHECK: &str = r#"
import json, sys, yaml, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
n = 0
for doc in yaml.safe_load_all(open(sys.argv[2])):
    jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)
    n += 1
assert n > 0, "no document"
print("valid", n)
"#;

fn servicemonitor_check(file: &Path) -> Output {
    Command::new(venv_bin("python"))
        .arg("-c")
        .arg(CRD_CHECK)
        .arg(
            root().join("examples/kubernetes/schemas/servicemonitor-monitoring.coreos.com-v1.json"),
        )
        .arg(file)
        .output()
        .expect("run python")
}

#[test]
fn kubernetes_manifests_are_valid() {
    let dir = root().join("examples/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    for want in [
        "configmap.yaml",
        "cronjob.yaml",
        "deployment.yaml",
        "secret.yaml",
        "service.yaml",
        "servicemonitor.yaml",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    let (crds, core): (Vec<PathBuf>, Vec<PathBuf>) = files
        .into_iter()
        .partition(|p| p.ends_with("servicemonitor.yaml"));
    let out = kubernetes_validate(&core);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(!t.contains("WARN") && !t.contains("ERROR"), "{t}");
    assert_eq!(
        t.matches(" passed for resource ").count(),
        core.len(),
        "{t}"
    );

    // kubernetes-validate only warns about a kind it has no schema for:
    // the ServiceMonitor is checked against the schema shipped with it.
    for crd in &crds {
        let out = servicemonitor_check(crd);
        assert!(out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("valid 1"));
    }

    // The secret is a file mount, not an environment variable, and the
    // config the ConfigMap carries holds no password.
    let deploy = std::fs::read_to_string(dir.join("deployment.yaml")).unwrap();
    assert!(deploy.contains("secretName: holdfast-secret"));
    assert!(!deploy.contains("secretKeyRef"));
    let cm = std::fs::read_to_string(dir.join("configmap.yaml")).unwrap();
    assert!(cm.contains("password_file = \"/etc/holdfast/secret/"));

    // Broken copies fail: the checks look.
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("deployment.yaml");
    std::fs::write(&bad, deploy.replace("replicas: 1", "replicas: one")).unwrap();
    let out = kubernetes_validate(&[bad]);
    assert!(
        !out.status.success(),
        "a string replica count passed: {}",
        text(&out)
    );
    let bad = tmp.path().join("deployment2.yaml");
    std::fs::write(
        &bad,
        deploy.replace("readOnlyRootFilesystem", "readOnlyRootFS"),
    )
    .unwrap();
    assert!(
        !kubernetes_validate(&[bad]).status.success(),
        "strict mode refuses unknown fields"
    );
    let sm = std::fs::read_to_string(dir.join("servicemonitor.yaml")).unwrap();
    for (from, to) in [
        ("interval: 60s", "interval: one minute"),
        ("path: /metrics", "pathh: /metrics"),
        ("kind: ServiceMonitor", "kind: ServiceMonitr"),
    ] {
        let bad = tmp.path().join("sm.yaml");
        std::fs::write(&bad, sm.replace(from, to)).unwrap();
        let out = servicemonitor_check(&bad);
        assert!(!out.status.success(), "{to:?} passed");
    }
}

#[test]
fn systemd_units_verify() {
    let dir = root().join("examples/systemd");
    let tmp = tempfile::tempdir().unwrap();
    // `verify` checks that ExecStart's program exists: point it at a real
    // executable standing in for the installed binary.
    let exe = tmp.path().join("holdfast");
    std::fs::copy("/bin/true", &exe).unwrap();
    let mut units = Vec::new();
    for name in [
        "holdfast.service",
        "holdfast-backup.service",
        "holdfast-backup.timer",
    ] {
        let t = std::fs::read_to_string(dir.join(name)).unwrap();
        if name.ends_with(".service") {
            for opt in [
                "ProtectSystem=strict",
                "NoNewPrivileges=yes",
                "PrivateTmp=yes",
                "ReadWritePaths=",
            ] {
                assert!(t.contains(opt), "{name} lacks {opt}");
            }
        }
        let p = tmp.path().join(name);
        std::fs::write(
            &p,
            t.replace("/usr/local/bin/holdfast", &exe.display().to_string()),
        )
        .unwrap();
        units.push(p);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .expect("systemd-analyze is needed: apt-get install systemd (scripts/test.sh does)");
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    // Warnings about the units themselves (not about the host's other
    // units, which verify also loads) fail the test.
    for u in [
        "holdfast.service",
        "holdfast-backup.service",
        "holdfast-backup.timer",
    ] {
        assert!(
            !t.lines()
                .any(|l| l.starts_with(&format!("{}:", u)) || l.contains(&format!("/{u}:"))),
            "{t}"
        );
    }
    // The timer starts the one-shot service.
    let timer = std::fs::read_to_string(dir.join("holdfast-backup.timer")).unwrap();
    assert!(timer.contains("OnCalendar="));
    let oneshot = std::fs::read_to_string(dir.join("holdfast-backup.service")).unwrap();
    assert!(oneshot.contains("Type=oneshot") && oneshot.contains(" backup "));

    // A broken unit fails: the check looks.
    let bad = tmp.path().join("broken.service");
    std::fs::write(&bad, "[Service]\nExecStart=relative/path\nType=bogus\n").unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(
        !out.status.success() || !text(&out).is_empty(),
        "a broken unit passed silently"
    );
}
