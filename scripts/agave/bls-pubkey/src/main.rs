//! `bls-pubkey KEYPAIR.json`: prints the base64 compressed BLS public key that
//! `solana-genesis --bootstrap-validator-bls-pubkey` (and the `bls_pubkey` of a
//! `--validator-accounts-file` entry) wants for a validator whose authorized voter is KEYPAIR —
//! `BLSKeypair::derive_from_signer(voter, b"alpenglow")`, as agave-votor 4.2 derives the key it
//! votes with (`voting_utils.rs`, `BLS_KEYPAIR_DERIVE_SEED`). A wrong key makes the node never vote.

use std::process::ExitCode;

use solana_bls_signatures::keypair::Keypair as BlsKeypair;
use solana_bls_signatures::PubkeyCompressed;

/// agave-votor-messages `consensus_message.rs` `BLS_KEYPAIR_DERIVE_SEED`.
const SEED: &[u8] = b"alpenglow";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path] = args.as_slice() else {
        eprintln!("usage: bls-pubkey KEYPAIR.json");
        return ExitCode::from(2);
    };
    let voter = match solana_keypair::read_keypair_file(path) {
        Ok(k) => k,
        Err(_) => {
            // The reader's message may quote the file's contents: never echo a keypair.
            eprintln!("bls-pubkey: {path} is not a readable Solana keypair file");
            return ExitCode::from(1);
        }
    };
    match BlsKeypair::derive_from_signer(&voter, SEED) {
        Ok(bls) => {
            println!("{}", PubkeyCompressed(bls.public.to_bytes_compressed()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bls-pubkey: cannot derive the BLS key: {e}");
            ExitCode::from(1)
        }
    }
}
