pub mod fake_admin;
pub mod http_rpc;
