//! What every command-line program of the product shares at its edge: it ends quietly, with
//! success, when whoever reads its output goes away (`failover-config check-manager … | head -1`),
//! as `head`-friendly tools do, instead of Rust's panic on a broken pipe.

/// Installs a panic hook that turns the standard library's "failed printing to stdout: Broken
/// pipe" panic into a quiet exit 0; every other panic is reported as before. Call first in `main`.
pub fn exit_quietly_when_output_closes() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to std") && message.contains("os error 32") {
            std::process::exit(0);
        }
        default(info);
    }));
}
