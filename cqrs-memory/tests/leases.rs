//! `run_under_lease`: one worker runs the role at a time; another takes over when it stops.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cqrs_core::run_under_lease;
use cqrs_memory::MemoryLeases;
use tokio::sync::watch;

/// Counts how many workers run the role at once, and the most that ever did.
#[derive(Default)]
struct Running {
    now: AtomicUsize,
    most: AtomicUsize,
    runs: AtomicUsize,
}

fn worker(
    leases: MemoryLeases,
    running: Arc<Running>,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<cqrs_core::Result<()>> {
    tokio::spawn(async move {
        let stopped = async move {
            let mut shutdown = shutdown;
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        run_under_lease(
            &leases,
            "publisher",
            Duration::from_millis(100),
            stopped,
            |stop| {
                let running = Arc::clone(&running);
                async move {
                    let now = running.now.fetch_add(1, Ordering::SeqCst) + 1;
                    running.most.fetch_max(now, Ordering::SeqCst);
                    running.runs.fetch_add(1, Ordering::SeqCst);
                    stop.await;
                    running.now.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                }
            },
        )
        .await
    })
}

#[tokio::test(start_paused = true)]
async fn one_worker_runs_the_role_and_another_takes_over_when_it_stops() {
    let leases = MemoryLeases::new();
    let running = Arc::new(Running::default());
    let (stop_first, first_stopped) = watch::channel(false);
    let (stop_second, second_stopped) = watch::channel(false);
    let first = worker(leases.clone(), Arc::clone(&running), first_stopped);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let second = worker(leases.clone(), Arc::clone(&running), second_stopped);

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(running.now.load(Ordering::SeqCst), 1, "one worker runs the role");
    assert_eq!(running.runs.load(Ordering::SeqCst), 1, "the other keeps waiting");

    stop_first.send(true).unwrap();
    first.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        running.now.load(Ordering::SeqCst),
        1,
        "the second worker took over"
    );
    assert_eq!(running.runs.load(Ordering::SeqCst), 2);

    stop_second.send(true).unwrap();
    second.await.unwrap().unwrap();
    assert_eq!(running.now.load(Ordering::SeqCst), 0);
    assert_eq!(running.most.load(Ordering::SeqCst), 1, "never two at once");
}
