//! `docs/cli.md`, rendered from the clap declarations of `opts`: every
//! command and option with its value, default and help. A test holds the
//! file to this rendering, and every `--option` the docs name to an option
//! some command has. Rendering only.

use clap::CommandFactory;

use crate::opts::Cli;

/// One option as a table row.
fn row(a: &clap::Arg) -> Option<String> {
    let long = a.get_long()?;
    let value = match a.get_value_names() {
        Some(names) if a.get_num_args().is_some_and(|n| n.takes_values()) => {
            format!(" {}", names.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" "))
        }
        _ => String::new(),
    };
    let defaults: Vec<String> = a.get_default_values().iter().map(|v| v.to_string_lossy().to_string()).collect();
    let possible: Vec<String> = if value.is_empty() {
        Vec::new()
    } else {
        a.get_possible_values().iter().map(|p| p.get_name().to_string()).collect()
    };
    let mut help = a.get_long_help().or(a.get_help()).map(|h| h.to_string()).unwrap_or_default().replace('\n', " ");
    if !help.ends_with('.') {
        help.push('.');
    }
    if !possible.is_empty() {
        help.push_str(&format!(" One of `{}`.", possible.join("`, `")));
    }
    let default = if defaults.is_empty() { String::new() } else { format!("`{}`", defaults.join(" ")) };
    let repeat = if matches!(a.get_action(), clap::ArgAction::Append) { " (repeatable)" } else { "" };
    Some(format!("| `--{long}{value}`{repeat} | {default} | {} |", help.replace('|', "\\|")))
}

/// The whole page.
pub fn render() -> String {
    let mut cli = Cli::command();
    cli.build();
    let mut out = String::from(
        "# Command line\n\n<!-- Generated from xtask/src/opts.rs by `UPDATE_DOCS=1 cargo test -p xtask`; a test keeps it current. -->\n\n",
    );
    out.push_str("Every command takes `--help` (`-h` for a summary). Options take `--opt VALUE` or `--opt=VALUE`; an option that is not repeatable is refused when given twice.\n\n");
    out.push_str("Exit status of every command: 0 all passed, 1 a verdict failed, 2 usage error, 3 could not run, 130 interrupted ([ci.md](ci.md)).\n\n");
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        out.push_str(&format!("## `cargo xtask {}`\n\n", sub.get_name()));
        let about = sub.get_long_about().or(sub.get_about()).map(|a| a.to_string()).unwrap_or_default();
        out.push_str(&format!("{about}\n\n"));
        let rows: Vec<String> =
            sub.get_arguments().filter(|a| !a.is_hide_set() && a.get_long() != Some("help")).filter_map(row).collect();
        if rows.is_empty() {
            out.push_str("No options.\n\n");
            continue;
        }
        out.push_str("| option | default | what it does |\n|---|---|---|\n");
        rows.iter().for_each(|r| out.push_str(&format!("{r}\n")));
        out.push('\n');
    }
    out
}

/// Every long option any command has.
pub fn options() -> std::collections::BTreeSet<String> {
    let cli = Cli::command();
    cli.get_subcommands().flat_map(|s| s.get_arguments().filter_map(|a| a.get_long().map(str::to_string))).collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn root() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace")
    }

    #[test]
    fn docs_cli_md_is_rendered_from_the_options() {
        let path = root().join("docs/cli.md");
        let want = render();
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(&path, &want).expect("writing docs/cli.md");
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "docs/cli.md is not the rendering of xtask/src/opts.rs: run `UPDATE_DOCS=1 cargo test -p xtask`"
        );
    }

    #[test]
    fn every_option_the_docs_name_is_an_option() {
        let known = options();
        // Options of other tools the docs quote.
        // Options of other programs the docs quote: cargo's and rustup's, the
        // shmem-backend and fake-media-backend binaries', vhost-device-media's,
        // docker's; and the placeholders `--opt` / `--option`.
        let others = [
            "--workspace",
            "--all-targets",
            "--check",
            "--all",
            "--version",
            "--release",
            "--locked",
            "--help",
            "--bin",
            "--nocapture",
            "--profile",
            "--socket",
            "--regions",
            "--socket-path",
            "--fault",
            "--device",
            "--privileged",
            "--opt",
            "--option",
        ];
        let mut docs: Vec<std::path::PathBuf> = vec![root().join("README.md"), root().join("ARCHITECTURE.md")];
        for dir in ["docs", "examples", ".github/workflows"] {
            for e in std::fs::read_dir(root().join(dir)).into_iter().flatten().flatten() {
                docs.push(e.path());
            }
        }
        let mut unknown = Vec::new();
        for d in docs.iter().filter(|d| d.extension().is_some_and(|x| x == "md" || x == "yml" || x == "toml")) {
            let text = std::fs::read_to_string(d).unwrap_or_default();
            let workflow = d.extension().is_some_and(|x| x == "yml");
            // In a workflow, only the lines that run xtask (the rest are other programs').
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !workflow || l.contains("cargo xtask")) {
                for w in line
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                    .filter(|w| w.starts_with("--") && w.as_bytes().get(2).is_some_and(u8::is_ascii_alphabetic))
                {
                    let name = &w[2..];
                    if !known.contains(name) && !others.contains(&w) {
                        unknown.push(format!("{}:{}: {w}", d.display(), i + 1));
                    }
                }
            }
        }
        assert!(unknown.is_empty(), "options the docs name that no command has:\n{}", unknown.join("\n"));
    }

    /// GitHub's anchor of a heading: lower case, spaces to dashes, other punctuation dropped.
    fn slug(heading: &str) -> String {
        heading
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect()
    }

    fn markdown_files() -> Vec<std::path::PathBuf> {
        let mut files = vec![root().join("README.md"), root().join("ARCHITECTURE.md")];
        let docs = std::fs::read_dir(root().join("docs")).expect("docs/").flatten().map(|e| e.path());
        files.extend(docs.filter(|p| p.extension().is_some_and(|x| x == "md")));
        files
    }

    #[test]
    fn every_link_in_the_docs_resolves() {
        let mut broken = Vec::new();
        for file in markdown_files() {
            let text = std::fs::read_to_string(&file).expect("a doc");
            for (i, line) in text.lines().enumerate() {
                for (at, _) in line.match_indices("](") {
                    let target = line[at + 2..].split(')').next().unwrap_or_default();
                    if target.starts_with("http://") || target.starts_with("https://") || target.starts_with("mailto:")
                    {
                        continue;
                    }
                    let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
                    let dest = if path.is_empty() { file.clone() } else { file.parent().expect("a dir").join(path) };
                    let ok = dest.exists()
                        && (anchor.is_empty()
                            || std::fs::read_to_string(&dest)
                                .unwrap_or_default()
                                .lines()
                                .any(|l| l.starts_with('#') && slug(l.trim_start_matches('#')) == anchor));
                    if !ok {
                        broken.push(format!("{}:{}: {target}", file.display(), i + 1));
                    }
                }
            }
        }
        assert!(broken.is_empty(), "links that do not resolve:\n{}", broken.join("\n"));
    }

    #[test]
    fn the_readme_stays_short() {
        let words = std::fs::read_to_string(root().join("README.md")).expect("README.md").split_whitespace().count();
        assert!(words <= 2500, "README.md has {words} words; the rest belongs in docs/");
    }

    #[test]
    fn the_workflows_are_valid_yaml_and_use_only_documented_commands() {
        let cli = Cli::command();
        let commands: Vec<&str> = cli.get_subcommands().filter(|c| !c.is_hide_set()).map(|c| c.get_name()).collect();
        let dir = root().join(".github/workflows");
        let mut checked = 0;
        for file in std::fs::read_dir(&dir).expect(".github/workflows").flatten().map(|e| e.path()) {
            let text = std::fs::read_to_string(&file).expect("a workflow");
            let docs =
                yaml_rust2::YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert!(docs.first().is_some_and(|d| !d["jobs"].is_badvalue()), "{}: no jobs", file.display());
            for (i, line) in text.lines().enumerate() {
                for (at, _) in line.match_indices("cargo xtask ") {
                    let sub = line[at + "cargo xtask ".len()..].split_whitespace().next().unwrap_or_default();
                    assert!(commands.contains(&sub), "{}:{}: `cargo xtask {sub}` is no command", file.display(), i + 1);
                }
            }
            checked += 1;
        }
        assert!(checked >= 2, "the nightly and the hosted workflows");
        let example = std::fs::read_to_string(root().join("examples/github-workflow.yml")).expect("the example");
        assert_eq!(example, std::fs::read_to_string(dir.join("hosted.yml")).expect("hosted.yml"));
    }
}
