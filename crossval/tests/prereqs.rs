//! `scripts/prereqs.sh --check` against fake roots: which files exist → what is reported
//! missing. A green CI on a machine that already has every package proves nothing about
//! detecting a missing one, so each case builds the files a package would leave behind.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/prereqs.sh");

/// GCC 12's OpenMP link library where Debian's libgcc-12-dev puts it.
const LIBGOMP: &str = "usr/lib/gcc/x86_64-linux-gnu/12/libgomp.so";

/// A fake root: executables in `usr/bin`, libraries and headers where Debian puts them.
struct FakeRoot {
    dir: tempfile::TempDir,
}

impl FakeRoot {
    /// A machine with every prerequisite but libclang: cmake, g++ with GCC 12's OpenMP
    /// library, make, python3 with pip, cargo.
    fn without_libclang() -> Self {
        let root = FakeRoot {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        for exe in ["cmake", "c++", "g++", "make", "python3", "cargo"] {
            root.exe(&format!("usr/bin/{exe}"), "#!/bin/sh\nexit 0\n");
        }
        root.file(LIBGOMP);
        root.file("usr/lib/python3/dist-packages/pip/__init__.py");
        root
    }

    /// Plus Debian's libclang-dev: the library, its unversioned link, and the headers.
    fn with_libclang_dev() -> Self {
        let root = Self::without_libclang();
        root.file("usr/lib/llvm-14/lib/libclang-14.so.1");
        root.file("usr/lib/llvm-14/lib/libclang.so");
        root.file("usr/lib/llvm-14/lib/clang/14.0.6/include/stddef.h");
        root
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn file(&self, rel: &str) {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, b"").expect("write");
    }

    fn exe(&self, rel: &str, body: &str) {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, body).expect("write");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    fn remove(&self, rel: &str) {
        fs::remove_file(self.path(rel)).expect("remove");
    }

    /// Runs the check; returns (passed, its output).
    fn check(&self, env: &[(&str, &str)]) -> (bool, String) {
        let mut cmd = Command::new("bash");
        cmd.arg(SCRIPT)
            .arg("--check")
            .env("PREREQS_ROOT", self.dir.path())
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env_remove("LIBCLANG_PATH")
            .env_remove("LLVM_CONFIG_PATH");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run bash scripts/prereqs.sh");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

fn assert_missing(root: &FakeRoot, env: &[(&str, &str)], what: &[&str], packages: &str) {
    let (ok, out) = root.check(env);
    assert!(!ok, "check passed but should name {what:?}:\n{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line:\n{out}");
    for w in what {
        assert!(out.contains(w), "output does not name {w:?}:\n{out}");
    }
    assert!(
        out.contains(&format!("apt-get install {packages}")),
        "output does not give `apt-get install {packages}`:\n{out}"
    );
}

#[test]
fn libclang_cpp_alone_is_not_libclang() {
    // The state that broke a fresh Debian 12: libclang-cpp14 pulled in by another package.
    let root = FakeRoot::without_libclang();
    root.file("usr/lib/llvm-14/lib/libclang-cpp.so.14");
    root.file("usr/lib/x86_64-linux-gnu/libclang-cpp.so.14");
    assert_missing(
        &root,
        &[],
        &["libclang for bindgen", "only libclang-cpp.so.14 is present"],
        "libclang-dev",
    );
}

#[test]
fn versioned_libclang_is_found() {
    let root = FakeRoot::with_libclang_dev();
    root.remove("usr/lib/llvm-14/lib/libclang.so");
    root.file("usr/lib/llvm-14/lib/libclang-cpp.so.14");
    let (ok, out) = root.check(&[]);
    assert!(ok, "libclang-14.so.1 should do:\n{out}");
    assert!(out.is_empty(), "a satisfied check prints nothing:\n{out}");
}

#[test]
fn libclang_in_the_multiarch_folder_is_found() {
    let root = FakeRoot::without_libclang();
    root.file("usr/lib/x86_64-linux-gnu/libclang-14.so.1");
    root.file("usr/lib/llvm-14/lib/clang/14.0.6/include/stddef.h");
    let (ok, out) = root.check(&[]);
    assert!(ok, "{out}");
}

#[test]
fn nothing_at_all_names_libclang_dev() {
    let root = FakeRoot::without_libclang();
    assert_missing(
        &root,
        &[],
        &["no libclang.so or libclang-N.so found"],
        "libclang-dev",
    );
}

#[test]
fn libclang_without_builtin_headers_is_missing_its_headers() {
    let root = FakeRoot::with_libclang_dev();
    root.remove("usr/lib/llvm-14/lib/clang/14.0.6/include/stddef.h");
    assert_missing(&root, &[], &["builtin headers"], "libclang-dev");
}

#[test]
fn libclang_path_names_a_custom_folder() {
    let root = FakeRoot::without_libclang();
    root.file("opt/llvm/lib/libclang.so.18");
    root.file("usr/lib/clang/18/include/stddef.h");
    let dir = root.path("opt/llvm/lib");
    let (ok, out) = root.check(&[("LIBCLANG_PATH", dir.to_str().expect("utf-8 path"))]);
    assert!(ok, "LIBCLANG_PATH should be searched:\n{out}");
}

#[test]
fn llvm_config_libdir_is_searched() {
    let root = FakeRoot::without_libclang();
    root.file("opt/llvm-19/lib/libclang-19.so");
    root.file("usr/lib/clang/19/include/stddef.h");
    let libdir = root.path("opt/llvm-19/lib");
    let cfg = root.path("opt/llvm-19/bin/llvm-config");
    root.exe(
        "opt/llvm-19/bin/llvm-config",
        &format!("#!/bin/sh\necho {}\n", libdir.display()),
    );
    let (ok, out) = root.check(&[("LLVM_CONFIG_PATH", cfg.to_str().expect("utf-8 path"))]);
    assert!(ok, "llvm-config --libdir should be searched:\n{out}");
}

#[test]
fn every_missing_tool_is_named_on_one_line() {
    let root = FakeRoot {
        dir: tempfile::tempdir().expect("temp dir"),
    };
    root.exe("usr/bin/cargo", "#!/bin/sh\nexit 0\n");
    assert_missing(
        &root,
        &[],
        &["cmake", "C++ compiler", "make", "libclang", "python3"],
        "cmake g++ make libclang-dev python3",
    );
}

#[test]
fn python_without_pip_names_python3_pip() {
    let root = FakeRoot::with_libclang_dev();
    root.remove("usr/lib/python3/dist-packages/pip/__init__.py");
    assert_missing(&root, &[], &["pip for python3"], "python3-pip");
}

#[test]
fn missing_rust_is_named_without_apt() {
    let root = FakeRoot::with_libclang_dev();
    root.remove("usr/bin/cargo");
    let (ok, out) = root.check(&[]);
    assert!(!ok, "{out}");
    assert!(out.contains("rustup"), "{out}");
    assert!(
        !out.contains("apt-get"),
        "no Debian package gives Rust stable:\n{out}"
    );
}

#[test]
fn a_compiler_without_libgomp_names_its_gcc_dev_package() {
    // g++ installed, but GCC 12's libgomp.so gone: the defaults build's OpenMP cannot link.
    let root = FakeRoot::with_libclang_dev();
    root.remove(LIBGOMP);
    root.file("usr/lib/gcc/x86_64-linux-gnu/12/libstdc++.so");
    assert_missing(
        &root,
        &[],
        &["OpenMP for make refs-defaults", "GCC 12"],
        "libgcc-12-dev",
    );
}

#[test]
fn a_compiler_without_any_gcc_names_g_plus_plus_for_openmp() {
    let root = FakeRoot::with_libclang_dev();
    root.remove(LIBGOMP);
    fs::remove_dir_all(root.path("usr/lib/gcc")).expect("remove usr/lib/gcc");
    assert_missing(&root, &[], &["no GCC libgomp.so found"], "g++");
}
