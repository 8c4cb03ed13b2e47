//! The NATS server a node speaks to: connecting (name, credentials,
//! timeout) and checking it (its version, and JetStream), shared by a
//! node and by `status`.

use std::time::Duration;

use async_nats::ServerAddr;
use async_nats::jetstream;

use crate::error::ClusterError;
use crate::options::Options;

/// The oldest server the cluster speaks to: the client's consumer API is
/// 2.9.0's.
const MIN_VERSION: (u32, u32, u32) = (2, 9, 0);

/// Connects with `co` (plus this node's name, credentials and connect
/// timeout), and checks the server: its version, and JetStream. Returns
/// the client, the server (host:port) and its version.
pub(crate) async fn open(
    opts: &Options,
    co: async_nats::ConnectOptions,
) -> Result<(async_nats::Client, String, String), ClusterError> {
    opts.validate().map_err(ClusterError::Setting)?;
    let urls = opts.nats_shown();
    let addrs = opts
        .nats
        .iter()
        .map(|u| u.parse::<ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClusterError::Setting(format!("cluster.nats: {e}")))?;
    let mut co = co
        .name(format!("toolplane {}", opts.node))
        .connection_timeout(opts.connect_timeout);
    if let Some(path) = &opts.credentials {
        co = co
            .credentials_file(path)
            .await
            .map_err(|source| ClusterError::Credentials {
                path: path.clone(),
                source,
            })?;
    }
    let waited = opts.connect_timeout;
    let client = match tokio::time::timeout(
        waited + Duration::from_secs(1),
        async_nats::connect_with_options(addrs, co),
    )
    .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return Err(ClusterError::Connect {
                urls,
                waited,
                source: Box::new(e),
            });
        }
        Err(e) => {
            return Err(ClusterError::Connect {
                urls,
                waited,
                source: Box::new(e),
            });
        }
    };
    let info = client.server_info();
    let server = format!("{}:{}", info.host, info.port);
    match version_of(&info.version) {
        Some(v) if v >= MIN_VERSION => {}
        _ => {
            return Err(ClusterError::Server {
                server,
                version: info.version,
                needs: format!(
                    "the cluster needs NATS {}.{}.{} or later (its JetStream consumer API)",
                    MIN_VERSION.0, MIN_VERSION.1, MIN_VERSION.2
                ),
            });
        }
    }
    let js = jetstream::new(client.clone());
    if let Err(why) = jetstream_info(&js).await {
        return Err(ClusterError::Server {
            server,
            version: info.version,
            needs: format!("JetStream is not available ({why}): start nats-server with -js"),
        });
    }
    Ok((client, server, info.version))
}

fn version_of(v: &str) -> Option<(u32, u32, u32)> {
    let core = v.trim_start_matches('v').split(['-', '+']).next()?;
    let mut it = core.split('.').map(|p| p.parse::<u32>().ok());
    Some((it.next()??, it.next()??, it.next().flatten().unwrap_or(0)))
}

/// Whether the account has JetStream: `$JS.API.INFO`, read with only the
/// fields a 2.9 server sends (the client's own account type wants fields
/// of 2.10 and later, and so does its `create_key_value`).
pub(crate) async fn jetstream_info(js: &jetstream::Context) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    struct AccountInfo {
        #[serde(default)]
        #[allow(dead_code)]
        streams: u64,
    }
    match js
        .request::<_, _, jetstream::response::Response<AccountInfo>>("INFO", &())
        .await
    {
        Ok(jetstream::response::Response::Ok(_)) => Ok(()),
        Ok(jetstream::response::Response::Err { error }) => Err(error.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_as_the_server_writes_them() {
        assert_eq!(version_of("2.9.10"), Some((2, 9, 10)));
        assert_eq!(version_of("v2.10.0-beta.1"), Some((2, 10, 0)));
        assert_eq!(version_of("2.8"), Some((2, 8, 0)));
        assert!(version_of("2.8.4") < Some(MIN_VERSION));
        assert_eq!(version_of("x"), None);
    }
}
