fn main() {
    let path = std::env::args().nth(1).expect("path");
    let t = std::time::Instant::now();
    match mmiotrace_regdb::rnn::load(std::path::Path::new(&path)) {
        Ok(db) => { for w in &db.warnings { println!("warning: {w}"); } println!("ok: {} spaces, {} regs, {} enums, {} warnings in {:?}", db.spaces.len(), db.regs.len(), db.enums.len(), db.warnings.len(), t.elapsed()) },
        Err(e) => println!("error: {e}"),
    }
}
