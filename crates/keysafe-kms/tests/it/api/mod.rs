//! Every endpoint and error path of the v1 API, over a real keysafe server.

mod eek;
mod errors;
mod gateways;
mod keys;

fn std_b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}
fn unb64(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}
