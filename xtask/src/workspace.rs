//! Where things are in the repository, and running host commands so the user sees each one.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Context, Error, Result};

/// The repository root: the workspace that holds `xtask/`.
pub fn root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.to_path_buf(), Path::to_path_buf)
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` if set, else `target/` in the repository.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(directory) if !directory.is_empty() => root().join(directory),
        _ => root().join("target"),
    }
}

/// A `cargo` command run from the repository root, with the cargo that runs xtask.
pub fn cargo() -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(program);
    command.current_dir(root());
    command
}

/// Quote one word for a POSIX shell, only when it needs it.
pub fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The command as one line a person can paste into a shell: environment, program, arguments.
pub fn display(command: &Command) -> String {
    let mut words = Vec::new();
    for (key, value) in command.get_envs() {
        if let Some(value) = value {
            words.push(format!(
                "{}={}",
                key.to_string_lossy(),
                quote(&value.to_string_lossy())
            ));
        }
    }
    words.push(quote(&command.get_program().to_string_lossy()));
    words.extend(
        command
            .get_args()
            .map(|argument| quote(&argument.to_string_lossy())),
    );
    words.join(" ")
}

/// Print the command, run it with the terminal attached, and fail if it does not succeed.
pub fn run(command: &mut Command) -> Result<()> {
    println!("$ {}", display(command));
    let status = command
        .status()
        .context(|| format!("cannot start `{}`", command.get_program().to_string_lossy()))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "`{}` failed ({status})",
            display(command)
        )))
    }
}

/// The path of `program` if it is an existing path or found on `$PATH`.
pub fn find_program(program: impl AsRef<OsStr>) -> Option<PathBuf> {
    let program = Path::new(program.as_ref());
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    let search_path = std::env::var_os("PATH")?;
    std::env::split_paths(&search_path)
        .map(|directory| directory.join(program))
        .find(|candidate| candidate.is_file())
}

/// `path` made absolute against the current directory (it must exist).
pub fn absolute_existing(path: &Path, what: &str) -> Result<PathBuf> {
    if !path.exists() {
        return Err(Error::new(format!(
            "{what} `{}` does not exist",
            path.display()
        )));
    }
    path.canonicalize()
        .context(|| format!("cannot resolve {what} `{}`", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_leaves_plain_words_alone_and_protects_the_rest() {
        assert_eq!(quote("-M"), "-M");
        assert_eq!(
            quote("virt,virtualization=on,gic-version=3"),
            "virt,virtualization=on,gic-version=3"
        );
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn display_shows_environment_program_and_arguments() {
        let mut command = Command::new("cargo");
        command
            .env("BULKHEAD_IMAGE", "/x/bulkhead.bin")
            .args(["build", "--package", "a b"]);
        assert_eq!(
            display(&command),
            "BULKHEAD_IMAGE=/x/bulkhead.bin cargo build --package 'a b'"
        );
    }
}
