//! `keysafe whoami`: this client's registration as the server sees it.

use crate::cli::ClientArgs;
use crate::cmd::client_for;
use crate::output;

pub async fn run(args: ClientArgs) -> anyhow::Result<()> {
    let (home, client) = client_for(&args)?;
    let info = client.whoami().await?;
    if args.json {
        return output::json(&info);
    }
    println!("fingerprint  {}", info.fingerprint);
    println!("organisation {}", info.org);
    println!("state        {}", info.state);
    println!("role         {}", info.role.as_str());
    if let Some(n) = &info.name {
        println!("name         {n}");
    }
    println!("server       {}", client.base_url());
    println!("home         {}", home.dir.display());
    Ok(())
}
