//! The manual and shell completions, generated from the code so they
//! cannot drift: baton(8) from the clap command tree (every subcommand,
//! nested ones too, with its options), baton.toml(5) from the schema (every
//! key, its default from the model, its limits), and bash/zsh/fish
//! completions. `baton manual --out DIR` writes them (packaging does).
use anyhow::{Context as _, Result};
use baton_config::schema::{KEYS, Table};
use std::io::Write as _;
use std::path::Path;

/// Writes baton.8, baton.toml.5 and the completions into `dir`.
pub fn write_all(cmd: clap::Command, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("baton.8"), command_page(cmd.clone())?)?;
    std::fs::write(dir.join("baton.toml.5"), config_page())?;
    for (shell, file) in [
        (clap_complete::Shell::Bash, "baton.bash"),
        (clap_complete::Shell::Zsh, "_baton"),
        (clap_complete::Shell::Fish, "baton.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "baton", &mut out);
        std::fs::write(dir.join(file), out)?;
    }
    Ok(())
}

/// baton(8): the top page, then a section per subcommand (depth first).
pub fn command_page(cmd: clap::Command) -> Result<Vec<u8>> {
    let mut cmd = cmd.version(crate::VERSION);
    cmd.build();
    let mut out = Vec::new();
    let man = clap_mangen::Man::new(cmd.clone()).section("8");
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    writeln!(out, ".SH COMMANDS")?;
    subcommands(&cmd, "baton", &mut out)?;
    writeln!(
        out,
        ".SH FILES\n.TP\n/etc/baton/baton.toml\nThe configuration; see \\fBbaton.toml\\fR(5).\n.TP\n/run/baton/baton.sock\nThe control socket (root only).\n.TP\n/sys/fs/bpf/baton\nThe pinned programs and maps.\n.SH SEE ALSO\n\\fBbaton.toml\\fR(5), \\fBsystemctl\\fR(1)"
    )?;
    man.render_version_section(&mut out)?;
    Ok(out)
}

fn subcommands(cmd: &clap::Command, path: &str, out: &mut Vec<u8>) -> Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("{path} {}", sub.get_name());
        writeln!(out, ".SS \"{name}\"")?;
        if let Some(about) = sub.get_long_about().or(sub.get_about()) {
            writeln!(out, "{}", roff_escape(&about.to_string()))?;
        }
        let man = clap_mangen::Man::new(sub.clone().bin_name(name.clone()));
        let mut opts = Vec::new();
        man.render_synopsis_section(&mut opts)?;
        man.render_options_section(&mut opts)?;
        // Sections become sub-headings inside this command's part.
        let text = String::from_utf8_lossy(&opts).replace(".SH ", ".P\n.B ");
        out.extend_from_slice(text.as_bytes());
        subcommands(sub, &name, out)?;
    }
    Ok(())
}

/// baton.toml(5) from the schema.
pub fn config_page() -> Vec<u8> {
    let mut s = format!(
        ".TH BATON.TOML 5 \"\" \"baton {}\" \"File Formats\"\n.SH NAME\nbaton.toml \\- baton's configuration\n.SH DESCRIPTION\nOne TOML file, validated as a whole before anything is applied (\\fBbaton check\\fR); every error names the file, line, column, field and the fix. Durations are written with a unit: \"150ms\", \"2s\", \"1m\" (or \"0\").\n",
        env!("CARGO_PKG_VERSION")
    );
    for table in Table::ALL {
        s.push_str(&format!(".SH \"{}\"\n", table.heading()));
        for k in KEYS.iter().filter(|k| k.table == table) {
            let default = k
                .default
                .map_or("none (required or optional table)".to_string(), |d| d());
            s.push_str(&format!(
                ".TP\n.B {}\n{} ({}).\n.br\nDefault: {}.{}\n",
                k.name,
                roff_escape(k.doc),
                roff_escape(k.kind),
                roff_escape(&default),
                if k.limits.is_empty() {
                    String::new()
                } else {
                    format!("\n.br\nLimits: {}.", roff_escape(k.limits))
                }
            ));
        }
    }
    s.push_str(".SH SEE ALSO\n\\fBbaton\\fR(8)\n");
    s.into_bytes()
}

fn roff_escape(text: &str) -> String {
    let t = text.replace('\\', "\\\\").replace('-', "\\-");
    // A line starting with . or ' would be a roff request.
    match t.strip_prefix(['.', '\'']) {
        Some(_) => format!("\\&{t}"),
        None => t,
    }
}
