//! Every YAML file passes yamllint.

use super::*;

#[test]
fn yaml_files_pass_yamllint() {
    let mut files = Vec::new();
    collect_yaml(&root(), &mut files);
    files.push(path(".yamllint"));
    assert!(files.len() >= 15, "found only {files:?}");
    let out = run(
        Command::new(tool("yamllint")).args(["--strict", "-f", "parsable", "-c"]).arg(path(".yamllint")).args(&files),
        None,
    );
    assert!(out.status.success(), "yamllint:\n{}", text(&out));
}

pub(super) fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            if !["target", ".git", "node_modules"].contains(&name.as_str()) {
                collect_yaml(&p, out);
            }
        } else if name.ends_with(".yml") || name.ends_with(".yaml") {
            out.push(p);
        }
    }
}
