//! The README's table of what `wsgi serve --config` implements, accepts and refuses is the
//! one the code uses (`wsgi_config::serve_support`). When they differ, this test fails and
//! shows the table; `WSGI_RS_UPDATE_README=1 cargo test -p wsgi-cli --test readme` writes it.

const START: &str = "<!-- serve-support-table:start (generated from wsgi_config::serve_support; see wsgi-cli/tests/readme.rs) -->\n";
const END: &str = "<!-- serve-support-table:end -->";

#[test]
fn readme_table_of_directives_is_the_codes() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let start = readme
        .find(START)
        .expect("the README has the table's start marker")
        + START.len();
    let end = readme[start..].find(END).expect("and its end marker") + start;
    let table = wsgi_config::serve_support::markdown_table();
    if readme[start..end] != table {
        if std::env::var_os("WSGI_RS_UPDATE_README").is_some() {
            let updated = format!("{}{}{}", &readme[..start], table, &readme[end..]);
            std::fs::write(&path, updated).unwrap();
            return;
        }
        panic!(
            "README.md's directive table differs from the code's; run\n  WSGI_RS_UPDATE_README=1 cargo test -p wsgi-cli --test readme\nThe code's table:\n{table}"
        );
    }
}
