//! `connector`: the operator's CLI. Everything lives in the library so tests run the same code.

#[tokio::main]
async fn main() {
    let mut out = std::io::stdout().lock();
    let code = connector::run(std::env::args().skip(1), &mut out).await;
    std::process::exit(code);
}
