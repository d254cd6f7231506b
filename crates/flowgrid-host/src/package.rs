//! `flowgrid package`: zip-deploy packages, one per app.
//!
//! `<out>/<app>.zip` holds, at its root, `host.json` (its `defaultExecutablePath` is `handler`),
//! one folder per function with its `function.json`, and the release binary as `handler` with
//! mode 0755 in the zip's Unix attributes. The same layout is written unzipped to `<out>/<app>/`,
//! where `func start` works for those who have Core Tools.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use zip::write::SimpleFileOptions;

use crate::config::Config;

/// What to package.
#[derive(Debug, Clone)]
pub struct PackageOptions {
    /// App root (`host.json`, `functions/`).
    pub root: PathBuf,
    /// Output folder.
    pub out: PathBuf,
    /// Only this app (default: every app).
    pub app: Option<String>,
    /// Folder holding the release binaries `flowgrid-<app>`.
    pub bin_dir: PathBuf,
}

/// One written package.
#[derive(Debug, Clone)]
pub struct Packaged {
    /// App name.
    pub app: String,
    /// The zip file.
    pub zip: PathBuf,
    /// The unzipped folder.
    pub dir: PathBuf,
    /// Zip size in bytes.
    pub zip_bytes: u64,
}

/// The `local.settings.json` of an unzipped package: `FUNCTIONS_WORKER_RUNTIME=custom` and every
/// setting at its local default (the values of `local.settings.example.json`, never those of
/// the developer's own `local.settings.json`, which may hold secrets).
fn local_settings(root: &Path) -> Result<Vec<u8>> {
    let example = root.join("local.settings.example.json");
    let mut values = match std::fs::read(&example) {
        Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
            .with_context(|| format!("{}: not valid JSON", example.display()))?
            .get("Values")
            .and_then(serde_json::Value::as_object)
            .cloned()
            .unwrap_or_default(),
        Err(_) => serde_json::Map::new(),
    };
    values.insert(
        "FUNCTIONS_WORKER_RUNTIME".into(),
        serde_json::Value::String("custom".into()),
    );
    let doc = serde_json::json!({ "IsEncrypted": false, "Values": values });
    Ok(serde_json::to_vec_pretty(&doc)?)
}

/// Writes the packages (the binaries must already be built).
pub fn package(opts: &PackageOptions, notice: &mut dyn FnMut(String)) -> Result<Vec<Packaged>> {
    let config = Config::load(&opts.root, notice)?;
    let apps: Vec<_> = config
        .apps
        .iter()
        .filter(|a| opts.app.as_ref().is_none_or(|n| *n == a.name))
        .collect();
    if apps.is_empty() {
        let known: Vec<&str> = config.apps.iter().map(|a| a.name.as_str()).collect();
        bail!(
            "no app named {:?} (apps: {})",
            opts.app.clone().unwrap_or_default(),
            known.join(", ")
        );
    }
    let host_json = std::fs::read(opts.root.join("host.json")).context("reading host.json")?;
    let mut host_value: serde_json::Value =
        serde_json::from_slice(&host_json).context("host.json: not valid JSON")?;
    // The package's host.json always points at `handler`.
    if let Some(desc) = host_value
        .pointer_mut("/customHandler/description")
        .and_then(|d| d.as_object_mut())
    {
        desc.insert(
            "defaultExecutablePath".into(),
            serde_json::Value::String("handler".into()),
        );
    }
    let host_bytes = serde_json::to_vec_pretty(&host_value)?;
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    let mut written = Vec::new();
    for app in apps {
        let binary = opts.bin_dir.join(format!("flowgrid-{}", app.name));
        let handler = std::fs::read(&binary).with_context(|| {
            format!(
                "{}: missing; build it with `cargo build --release --bins`",
                binary.display()
            )
        })?;
        let dir = opts.out.join(&app.name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot replace {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)?;
        let mut files: Vec<(String, Vec<u8>, u32)> = vec![
            ("host.json".into(), host_bytes.clone(), 0o644),
            ("handler".into(), handler, 0o755),
        ];
        for f in &app.functions {
            let src = opts
                .root
                .join("functions")
                .join(&app.name)
                .join(&f.name)
                .join("function.json");
            let bytes =
                std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
            files.push((format!("{}/function.json", f.name), bytes, 0o644));
        }
        for (name, bytes, mode) in &files {
            let path = dir.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, bytes)?;
            set_mode(&path, *mode)?;
        }
        // For `func start` in the folder (not in the zip: Azure reads app settings, not this file).
        std::fs::write(dir.join("local.settings.json"), local_settings(&opts.root)?)?;
        let zip_path = opts.out.join(format!("{}.zip", app.name));
        write_zip(&zip_path, &files)?;
        let zip_bytes = std::fs::metadata(&zip_path)?.len();
        written.push(Packaged {
            app: app.name.clone(),
            zip: zip_path,
            dir,
            zip_bytes,
        });
    }
    Ok(written)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn write_zip(path: &Path, files: &[(String, Vec<u8>, u32)]) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut zip = zip::ZipWriter::new(file);
    let mut dirs = std::collections::BTreeSet::new();
    for (name, bytes, mode) in files {
        if let Some((dir, _)) = name.rsplit_once('/')
            && dirs.insert(dir.to_owned())
        {
            zip.add_directory(
                format!("{dir}/"),
                SimpleFileOptions::default().unix_permissions(0o755),
            )?;
        }
        let options = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(*mode);
        zip.start_file(name.as_str(), options)?;
        zip.write_all(bytes)?;
    }
    zip.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    #[test]
    fn a_package_holds_host_json_the_function_folders_and_an_executable_handler() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("host.json"), r#"{"customHandler":{"description":{"defaultExecutablePath":"handler"},"enableForwardingHttpRequest":true}}"#).unwrap();
        let f = root.join("functions/demo/Hello");
        std::fs::create_dir_all(&f).unwrap();
        std::fs::write(f.join("function.json"), r#"{"bindings":[{"type":"httpTrigger","direction":"in","name":"req"},{"type":"http","direction":"out","name":"res"}]}"#).unwrap();
        std::fs::write(
            root.join("local.settings.example.json"),
            r#"{"Values":{"FLOWGRID_STORE":"sqlite","FLOWGRID_DATA_DIR":".flowgrid"}}"#,
        )
        .unwrap();
        std::fs::write(
            root.join("local.settings.json"),
            r#"{"Values":{"COSMOS_KEY":"a secret of the developer"}}"#,
        )
        .unwrap();
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/flowgrid-demo"), b"\x7fELF fake").unwrap();
        let out = root.join("dist");
        let done = package(
            &PackageOptions {
                root: root.to_owned(),
                out: out.clone(),
                app: None,
                bin_dir: root.join("bin"),
            },
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(done.len(), 1);
        let mut zip =
            zip::ZipArchive::new(std::fs::File::open(out.join("demo.zip")).unwrap()).unwrap();
        let mut names: Vec<String> = zip.file_names().map(str::to_owned).collect();
        names.sort();
        assert_eq!(
            names,
            ["Hello/", "Hello/function.json", "handler", "host.json"]
        );
        let handler = zip.by_name("handler").unwrap();
        assert_eq!(handler.unix_mode().unwrap() & 0o777, 0o755);
        drop(handler);
        let mut host = String::new();
        zip.by_name("host.json")
            .unwrap()
            .read_to_string(&mut host)
            .unwrap();
        assert!(host.contains("\"defaultExecutablePath\": \"handler\""));
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(out.join("demo/handler"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o755
        );
        assert!(out.join("demo/Hello/function.json").is_file());
        // `func start` in the folder reads local.settings.json: the custom runtime and every
        // setting at its local default, never the developer's own values.
        let settings: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("demo/local.settings.json")).unwrap())
                .unwrap();
        assert_eq!(settings["Values"]["FUNCTIONS_WORKER_RUNTIME"], "custom");
        assert_eq!(settings["Values"]["FLOWGRID_STORE"], "sqlite");
        assert!(settings["Values"].get("COSMOS_KEY").is_none(), "{settings}");
        assert_eq!(settings["IsEncrypted"], false);
    }
}
