//! The runner's admission: shares, fair workers, and its figures.

use super::*;
use crate::{config::Settings, tasks::MemoryTasks};

/// A job that says it started, then runs until stopped.
fn endless(name: &'static str, started: tokio::sync::mpsc::UnboundedSender<&'static str>) -> Job {
    Box::new(move |_| {
        Box::pin(async move {
            let _ = started.send(name);
            std::future::pending::<Outcome>().await
        })
    })
}

#[tokio::test]
async fn alice_fills_her_share_and_bob_still_gets_his_task_and_the_next_worker() {
    let mut settings = Settings::load_with_env(None, Vec::new()).unwrap().tasks;
    settings.workers = 2;
    settings.queue = 4;
    settings.max_per_principal = 3;
    let tasks = TaskManager::new(
        TaskStore::Memory(MemoryTasks::new()),
        "r".into(),
        &settings,
        None,
    );
    let (started, mut has_started) = tokio::sync::mpsc::unbounded_channel();
    let mut alices = Vec::new();
    let refused = loop {
        let name = [
            "alice-1", "alice-2", "alice-3", "alice-4", "alice-5", "alice-6", "alice-7",
        ][alices.len()];
        match tasks
            .submit("alice", "slow", endless(name, started.clone()))
            .await
        {
            Ok(record) => alices.push(record.id),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(refused, TaskError::ShareFull { share: 3 }),
        "{refused}"
    );
    assert_eq!(alices.len(), 3);
    let first_two = [has_started.recv().await, has_started.recv().await];
    assert_eq!(first_two, [Some("alice-1"), Some("alice-2")]);

    tasks
        .submit("bob", "slow", endless("bob", started.clone()))
        .await
        .expect("bob's task is admitted");
    // A worker frees: bob runs none, alice one, so it is bob's though her third
    // task waited longer.
    tasks.notify_cancel(&alices[0], "r").await;
    let next = tokio::time::timeout(Duration::from_secs(10), has_started.recv()).await;
    assert_eq!(next.ok().flatten(), Some("bob"));
    tasks.hand_back().await;
}

#[tokio::test]
async fn register_metrics_exposes_admissions_and_capacity() {
    let mut settings = Settings::load_with_env(None, Vec::new()).unwrap().tasks;
    settings.workers = 2;
    settings.queue = 3;
    let tasks = TaskManager::new(
        TaskStore::Memory(MemoryTasks::new()),
        "r".into(),
        &settings,
        None,
    );
    let metrics = Metrics::new("r", "memory");
    tasks.register_metrics(&metrics);
    let text = metrics.render();
    for line in [
        "# TYPE stateful_mcp_tasks_admitted gauge\n",
        "stateful_mcp_tasks_admitted{replica=\"r\"} 0.0\n",
        "stateful_mcp_tasks_capacity{replica=\"r\"} 5.0\n",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
}
