//! `patron-campaign`: the campaign service on its own.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    patron_runtime::server::run_service_binary(&[patron_campaign::module()]).await
}
