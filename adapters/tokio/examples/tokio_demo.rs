//! wirecall on tokio, end to end in one process: a server with the built-ins, an `async`
//! function and a synchronous one on TCP and UDP; clients calling it from many tasks at
//! once, a call cancelled by dropping its future, a timeout, and a graceful shutdown.
//!
//! Run: `cargo run -p wirecall-tokio --example tokio_demo`

use std::time::Duration;

use wirecall::{CallErrorKind, ClientConfig, Endpoint, ServerConfig};
use wirecall_tokio::{Client, ServerBuilder};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = wirecall::builtins::register(ServerBuilder::new(ServerConfig::default()))
        .function("reverse", |body| Ok(body.iter().rev().copied().collect()))
        .async_function("slow_upper", |body| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(body.to_ascii_uppercase())
        })
        .listen("tcp:127.0.0.1:0".parse::<Endpoint>()?)
        .listen("udp:127.0.0.1:0".parse::<Endpoint>()?)
        .build()?;
    let endpoints = server.endpoints().to_vec();
    let stop = server.shutdown_handle();
    let stats = server.stats();
    let serving = tokio::spawn(server.run());

    for endpoint in &endpoints {
        let client = Client::connect(endpoint, ClientConfig::default()).await?;
        let reversed = client
            .call("reverse", b"wirecall", Some(Duration::from_secs(1)))
            .await?;
        println!(
            "{endpoint}: reverse -> {}",
            String::from_utf8_lossy(&reversed)
        );

        // Fifty calls in flight at once from fifty tasks, over one connection.
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move {
                    let body = format!("call {i}");
                    client
                        .call("slow_upper", body.as_bytes(), Some(Duration::from_secs(2)))
                        .await
                })
            })
            .collect();
        let mut answered = 0;
        for task in tasks {
            task.await??;
            answered += 1;
        }
        println!("{endpoint}: {answered} concurrent calls answered");

        // A call whose future is dropped is cancelled: the server is told.
        let call = client.start("sleep", b"5000", None).await?;
        drop(call);

        // A deadline: the error says whether the server may have run the call.
        match client
            .call("sleep", b"1000", Some(Duration::from_millis(50)))
            .await
        {
            Err(e) if matches!(e.kind(), CallErrorKind::TimedOut) => {
                println!(
                    "{endpoint}: sleep 1000 with a 50 ms deadline: {e} ({})",
                    e.execution()
                );
            }
            other => return Err(format!("expected a timeout, got {other:?}").into()),
        }
        client.close().await;
    }

    stop.shutdown();
    serving.await??;
    let snapshot = stats.snapshot().to_string();
    for line in snapshot
        .lines()
        .filter(|l| l.starts_with("calls.slow_upper") || l.starts_with("requests.cancelled"))
    {
        println!("server stats: {line}");
    }
    Ok(())
}
