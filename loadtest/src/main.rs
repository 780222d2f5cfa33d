//! Load test for pushgate: publishes jobs, measures results (see issue "Load test and performance").
fn main() {
    eprintln!("loadtest: not built yet; see docs/benchmarks.md");
    std::process::exit(2);
}
