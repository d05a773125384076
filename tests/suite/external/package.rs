//! The Debian package `contrib/deb/build` makes
//! (`target/debian/readyloop_<version>_<arch>.deb`), as `dpkg`, `man`,
//! `bash` and systemd's analyzer see it: every file it promises is in
//! it, its manual pages render and name every subcommand and every
//! `serve` flag, bash completes from its script, its units pass
//! `verify` with an exposure of at most 0.9, and it installs and
//! removes for real (as root, as CI runs).
//!
//! The package is built before the suite runs (`.ci/run` does it); a
//! missing one fails with the command that builds it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::units::{copy_tree, exposure, host_units, verify};
use super::{tool, Scratch};
use crate::generate::{serve_flags, subcommands};
use crate::support::server::binary;

/// The highest exposure `systemd-analyze security` may give the
/// installed service.
const MAX_EXPOSURE: f64 = 0.9;

/// The files the package must hold, besides one manual page per
/// subcommand.
const FILES: &[&str] = &[
    "/usr/bin/readyloop",
    "/usr/lib/systemd/system/readyloop.service",
    "/usr/lib/systemd/system/readyloop.socket",
    "/usr/share/man/man1/readyloop.1.gz",
    "/usr/share/bash-completion/completions/readyloop",
    "/usr/share/zsh/vendor-completions/_readyloop",
    "/usr/share/fish/vendor_completions.d/readyloop.fish",
    "/usr/share/doc/readyloop/copyright",
    "/usr/share/doc/readyloop/README.md",
    "/usr/share/doc/readyloop/LICENSE-MIT",
    "/usr/share/doc/readyloop/LICENSE-APACHE",
];

/// `cmd`'s output, or a failure naming `what` with its status and
/// stderr.
fn run(what: &str, cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Cargo's target directory: the test binary is
/// `<target>/<profile>/deps/suite-…`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors().nth(3).expect("a target directory").to_path_buf()
}

/// The package's path, or a failure saying how to build it.
fn package() -> PathBuf {
    let dpkg = tool("dpkg", "dpkg");
    let out = run("dpkg", Command::new(dpkg).arg("--print-architecture"));
    let arch = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let name = format!("readyloop_{}_{arch}.deb", env!("CARGO_PKG_VERSION"));
    let path = target_dir().join("debian").join(name);
    assert!(
        path.is_file(),
        "no {}: build it with contrib/deb/build (it needs cargo-deb: \
         cargo install cargo-deb --locked)",
        path.display()
    );
    path
}

/// Every manual page the package holds: readyloop's and one per
/// subcommand.
fn pages() -> Vec<String> {
    let mut pages = vec!["readyloop".to_string()];
    pages.extend(subcommands().iter().map(|sub| format!("readyloop-{sub}")));
    pages
}

/// The package's files unpacked under a fresh scratch directory.
fn unpacked(name: &str) -> Scratch {
    let scratch = Scratch::new(name);
    run(
        "dpkg-deb -x",
        Command::new(tool("dpkg-deb", "dpkg"))
            .arg("-x")
            .arg(package())
            .arg(&scratch.path),
    );
    scratch
}

/// Where `path` (absolute, as installed) lands under `root`.
fn under(root: &Scratch, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// `dpkg-deb -c` lists every promised file, owned by root (uid and gid
/// 0), the binary executable; the control file names the Cargo version.
#[test]
fn the_package_holds_every_file() {
    let deb = package();
    let out = run(
        "dpkg-deb -c",
        Command::new(tool("dpkg-deb", "dpkg")).arg("-c").arg(&deb),
    );
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    // `-rwxr-xr-x 0/0 1563960 2026-12-06 00:00 ./usr/bin/readyloop`
    let entry = |path: &str| {
        listing.lines().find(|line| {
            line.split_whitespace().last() == Some(&format!(".{path}"))
        })
    };
    let mut want: Vec<String> = FILES.iter().map(|f| f.to_string()).collect();
    want.extend(
        pages().iter().map(|p| format!("/usr/share/man/man1/{p}.1.gz")),
    );
    for path in &want {
        let line = entry(path).unwrap_or_else(|| {
            panic!("{path} not in the package:\n{listing}")
        });
        let owner = line.split_whitespace().nth(1);
        assert!(matches!(owner, Some("0/0" | "root/root")), "{line}");
        assert!(line.starts_with('-'), "not a plain file: {line}");
    }
    let binary = entry("/usr/bin/readyloop").expect("listed");
    assert!(binary.starts_with("-rwxr-xr-x"), "{binary}");

    let out = run(
        "dpkg-deb -f",
        Command::new(tool("dpkg-deb", "dpkg"))
            .arg("-f")
            .arg(&deb)
            .args(["Package", "Version"]),
    );
    let control = String::from_utf8_lossy(&out.stdout).into_owned();
    let version = format!("Version: {}\n", env!("CARGO_PKG_VERSION"));
    assert!(control.contains("Package: readyloop\n"), "{control}");
    assert!(control.contains(&version), "{control}");
}

/// The copyright file is in Debian's machine-readable format and names
/// both licences, whose texts are installed beside it.
#[test]
fn the_copyright_file_names_both_licences() {
    let root = unpacked("package-copyright");
    let doc = under(&root, "/usr/share/doc/readyloop");
    let copyright =
        fs::read_to_string(doc.join("copyright")).expect("read copyright");
    assert!(copyright.starts_with("Format: https://www.debian.org/"));
    assert!(copyright.contains("License: MIT or Apache-2.0\n"));
    assert!(copyright.contains("\nLicense: MIT\n"));
    assert!(copyright.contains("\nLicense: Apache-2.0\n"));
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for licence in ["LICENSE-MIT", "LICENSE-APACHE"] {
        let shipped = fs::read(doc.join(licence)).expect("read a licence");
        let ours = fs::read(repo.join(licence)).expect("read a licence");
        assert!(shipped == ours, "{licence} differs from the repository's");
    }
}

/// The chapters of docs/ are installed beside the README, so that its
/// links to them hold in /usr/share/doc/readyloop.
#[test]
fn the_chapters_are_shipped_beside_the_readme() {
    let root = unpacked("package-docs");
    let doc = under(&root, "/usr/share/doc/readyloop");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme =
        fs::read_to_string(doc.join("README.md")).expect("read the README");
    let mut chapters = 0;
    for entry in fs::read_dir(repo.join("docs")).expect("read docs/") {
        let path = entry.expect("a docs/ entry").path();
        if !path.extension().is_some_and(|e| e == "md") {
            continue;
        }
        let name = path.file_name().expect("a name").to_string_lossy();
        let shipped = fs::read(doc.join("docs").join(&*name))
            .unwrap_or_else(|e| panic!("docs/{name} not in the package: {e}"));
        let ours = fs::read(&path).expect("read a chapter");
        assert!(shipped == ours, "docs/{name} differs from the repository's");
        chapters += 1;
    }
    assert!(chapters >= 10, "only {chapters} chapters in docs/");
    assert!(readme.contains("(docs/"), "the README links no chapter");
}

/// `man -l` renders every page without a warning; readyloop(1) names
/// every subcommand and readyloop-serve(1) every serve flag.
#[test]
fn the_man_pages_render_and_name_every_flag() {
    let man = tool("man", "man-db");
    let root = unpacked("package-man");
    let render = |page: &str| {
        let path = under(&root, &format!("/usr/share/man/man1/{page}.1.gz"));
        // The C locale renders `\-` as `-`; no hyphenation, no
        // justification: every flag stays whole on its line.
        let out = run(
            &format!("man -l {page}"),
            Command::new(&man)
                .env("LC_ALL", "C")
                .env("MANPAGER", "cat")
                .env("MANWIDTH", "100")
                .args(["--no-hyphenation", "--no-justification", "-l"])
                .arg(&path),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.trim().is_empty(), "man -l {page}: {stderr}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.contains("NAME"), "{page} rendered:\n{text}");
        text
    };
    for page in pages() {
        render(&page);
    }
    let top = render("readyloop");
    for sub in subcommands() {
        assert!(top.contains(&format!("readyloop-{sub}")), "{sub}:\n{top}");
    }
    let serve = render("readyloop-serve");
    for flag in serve_flags() {
        assert!(serve.contains(&flag), "{flag} not in:\n{serve}");
    }
}

/// The words bash's completion function offers for the command line
/// `words`, the last one being completed, with the package's script
/// sourced.
fn bash_completes(script: &Path, words: &[&str]) -> Vec<String> {
    let program = r#"
        source "$1"; shift
        spec=$(complete -p readyloop) || exit 3
        function=${spec##*-F }; function=${function%% *}
        COMP_WORDS=("$@")
        COMP_CWORD=$(($# - 1))
        COMP_LINE="$*"
        COMP_POINT=${#COMP_LINE}
        "$function" readyloop "${COMP_WORDS[COMP_CWORD]}" \
            "${COMP_WORDS[COMP_CWORD - 1]}"
        printf '%s\n' "${COMPREPLY[@]}"
    "#;
    let out = run(
        &format!("bash completion of {words:?}"),
        Command::new(tool("bash", "bash"))
            .args(["--norc", "--noprofile", "-c", program, "bash"])
            .arg(script)
            .args(words),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(String::from)
        .collect()
}

/// bash, with the package's completion sourced, completes `readyloop
/// se` to `serve`, and `readyloop serve --mo` to `--mode` and
/// `--model`. The script is the one this tree's binary writes: the
/// package is not older than the code under test.
#[test]
fn bash_completes_from_the_packaged_script() {
    let root = unpacked("package-bash");
    let script =
        under(&root, "/usr/share/bash-completion/completions/readyloop");
    let ours = run(
        "readyloop generate completions bash",
        Command::new(binary()).args(["generate", "completions", "bash"]),
    );
    assert!(
        fs::read(&script).expect("read the packaged script") == ours.stdout,
        "the package's bash completion is not this tree's: rebuild it \
         with contrib/deb/build"
    );
    assert_eq!(bash_completes(&script, &["readyloop", "se"]), ["serve"]);
    let mut flags = bash_completes(&script, &["readyloop", "serve", "--mo"]);
    flags.sort();
    assert_eq!(flags, ["--mode", "--model"]);
}

/// The units as packaged, in a root holding the host's units and the
/// package's files: `verify` accepts both (the ExecStart= program is
/// the packaged binary), and the service's exposure is at most 0.9.
#[test]
fn the_packaged_units_verify_with_exposure_at_most_0_9() {
    let root = Scratch::new("package-units");
    copy_tree(&host_units(), &root.join("usr/lib/systemd/system"));
    run(
        "dpkg-deb -x",
        Command::new(tool("dpkg-deb", "dpkg"))
            .arg("-x")
            .arg(package())
            .arg(&root.path),
    );
    let service = fs::read_to_string(under(
        &root,
        "/usr/lib/systemd/system/readyloop.service",
    ))
    .expect("read the packaged service");
    assert!(service.contains("\nExecStart=/usr/bin/readyloop serve "));
    if let Err(found) =
        verify(&root, &["readyloop.socket", "readyloop.service"])
    {
        panic!("systemd-analyze verify: {found}");
    }
    let (score, against) = exposure(&root, "readyloop.service");
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}: {against:#?}"
    );
}

/// Whether dpkg knows the package `readyloop` in any state (installed,
/// or removed with its configuration left).
fn dpkg_knows_readyloop() -> bool {
    Command::new(tool("dpkg-query", "dpkg"))
        .args(["-W", "-f", "${db:Status-Status}", "readyloop"])
        .output()
        .map(|out| {
            out.status.success()
                && !String::from_utf8_lossy(&out.stdout).trim().is_empty()
                && String::from_utf8_lossy(&out.stdout).trim()
                    != "not-installed"
        })
        .unwrap_or(false)
}

/// Purges the package if a failed assertion left it installed.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        if dpkg_knows_readyloop() {
            let _ =
                Command::new("dpkg").args(["--purge", "readyloop"]).output();
        }
    }
}

/// Every path under /etc/systemd/system that names readyloop: the
/// enablement links and the masks of deb-systemd-helper.
fn systemd_links() -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            let link = entry.file_type().is_ok_and(|t| t.is_symlink());
            if path.is_dir() && !link {
                walk(&path, found);
            } else if entry.file_name().to_string_lossy().contains("readyloop")
            {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(Path::new("/etc/systemd/system"), &mut found);
    found
}

/// `dpkg -i` installs the package for real: the binary runs and prints
/// its version, the socket is enabled (linked for the next boot: no
/// systemd runs here), the installed units pass `verify`, the manual and
/// completions are in place; `dpkg -r` removes every file; `dpkg
/// --purge` removes the links and masks too. Needs root, and a host
/// where readyloop is not installed already.
#[test]
fn dpkg_installs_and_removes_the_package() {
    let deb = package();
    assert!(
        rustix::process::geteuid().is_root(),
        "dpkg -i installs into /: run the external suite as root (CI does)"
    );
    assert!(
        !dpkg_knows_readyloop(),
        "readyloop is installed already; this test installs and removes \
         it: dpkg --purge readyloop first"
    );
    assert!(
        !Path::new("/usr/bin/readyloop").exists(),
        "/usr/bin/readyloop exists outside the package: remove it first"
    );
    let dpkg = tool("dpkg", "dpkg");
    let installed = Installed;
    run("dpkg -i", Command::new(&dpkg).arg("-i").arg(&deb));

    let out = run(
        "readyloop --version",
        Command::new("/usr/bin/readyloop").arg("--version"),
    );
    let version = format!("readyloop {}\n", env!("CARGO_PKG_VERSION"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), version);
    let mode = fs::metadata("/usr/bin/readyloop").expect("stat").permissions();
    assert_eq!(mode.mode() & 0o777, 0o755);
    for file in FILES {
        assert!(Path::new(file).is_file(), "{file} not installed");
    }
    // The link may name /lib/systemd/system: the same directory where
    // /lib is /usr/lib.
    let wants = "/etc/systemd/system/sockets.target.wants/readyloop.socket";
    let socket = "/usr/lib/systemd/system/readyloop.socket";
    let target = fs::canonicalize(wants).unwrap_or_else(|e| {
        panic!("readyloop.socket not enabled: {wants}: {e}")
    });
    assert_eq!(target, fs::canonicalize(socket).expect("the socket unit"));
    // The units where they are installed, with the real binary.
    let out = run(
        "systemd-analyze verify",
        Command::new(tool("systemd-analyze", "systemd"))
            .env("SYSTEMD_COLORS", "0")
            .arg("verify")
            .args([socket, "/usr/lib/systemd/system/readyloop.service"]),
    );
    let said = String::from_utf8_lossy(&out.stdout).into_owned()
        + &String::from_utf8_lossy(&out.stderr);
    assert!(said.trim().is_empty(), "systemd-analyze verify: {said}");

    run("dpkg -r", Command::new(&dpkg).args(["-r", "readyloop"]));
    for file in FILES {
        assert!(!Path::new(file).exists(), "{file} left after dpkg -r");
    }
    run("dpkg --purge", Command::new(&dpkg).args(["--purge", "readyloop"]));
    assert!(!dpkg_knows_readyloop(), "dpkg still knows readyloop");
    let left = systemd_links();
    assert!(left.is_empty(), "left after dpkg --purge: {left:?}");
    drop(installed);
}
