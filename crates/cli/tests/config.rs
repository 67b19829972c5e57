//! `holdfast config validate`: the shipped example is valid; a file with
//! mistakes exits 2 and names file, line and column for each of them.

mod common;

use std::fs;
use std::path::PathBuf;

use common::*;

#[test]
fn the_shipped_example_validates() {
    let env = Env::new();
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/holdfast.toml");
    let o = env.ok(["config".as_ref(), "validate".as_ref(), example.as_os_str()]);
    let out = stdout(&o);
    assert!(
        out.contains("valid: 2 repositories, 4 source(s), 7 job(s)"),
        "{out}"
    );
    assert!(
        out.contains("job nightly-check (check): next run "),
        "{out}"
    );
    let v = env.json(["config".as_ref(), "validate".as_ref(), example.as_os_str()]);
    assert_eq!(v["valid"], true);
    assert_eq!(v["jobs"][0]["timezone"], "Europe/Berlin");
    assert!(v["jobs"][0]["next_run"].as_str().is_some());
}

#[test]
fn mistakes_exit_2_naming_file_line_and_column() {
    let env = Env::new();
    let file = env.path("holdfast.toml");
    fs::write(
        &file,
        "[repository.main]\nurl = \"/srv/r\"\npassword = \"hunter2\"\n\n[[job]]\nname = \"j\"\nkind = \"check\"\nrepository = \"main\"\nschedule = \"0 30 1 * *\"\n",
    )
    .unwrap();
    let o = env.run(["config".as_ref(), "validate".as_ref(), file.as_os_str()]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    let f = file.display();
    assert!(
        err.contains(&format!("{f}:3:12: password is written in the file")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{f}:9:12: schedule \"0 30 1 * *\" has 5 fields")),
        "{err}"
    );
    // The secret itself is never echoed back.
    assert!(!err.contains("hunter2"), "{err}");
    let o = env.run([
        "config".as_ref(),
        "validate".as_ref(),
        file.as_os_str(),
        "--json".as_ref(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"][0]["line"], 3);
    let o = env.run([
        "config".as_ref(),
        "validate".as_ref(),
        env.path("missing.toml").as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read"));
}
