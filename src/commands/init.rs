use anyhow::Result;
use tracing::info;

use crate::cli::InitArgs;
use crate::target;

pub async fn init(args: &InitArgs) -> Result<()> {
    let target = target::open(
        args.target.url()?,
        args.target.columns(),
        &args.target.options(),
    )
    .await?;
    target.init(args.target.create_messages).await?;
    if args.views {
        target.create_views(args.target.timezone).await?;
    }
    info!(target_url = %args.target.url()?, "target ready");
    Ok(())
}
