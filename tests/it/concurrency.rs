//! Many concurrent clients: every Get returns the last acknowledged Set of its
//! key (the tutorial's Go map would corrupt or crash here).

use std::collections::HashMap;

use tonic::Code;

use crate::harness::{Server, XorShift, get, set};

const CLIENTS: usize = 64;
const OPS_PER_CLIENT: usize = 1000;
const KEYS_PER_CLIENT: u64 = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_clients_each_read_their_last_acknowledged_write() {
    sixty_four_clients(&Server::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_clients_each_read_their_last_acknowledged_write_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    sixty_four_clients(&Server::start_on_disk(dir.path(), &[])).await;
}

async fn sixty_four_clients(server: &Server) {
    let mut tasks = Vec::new();
    for id in 0..CLIENTS {
        // One connection per client, as 64 separate processes would have.
        let mut client = server.client().await;
        tasks.push(tokio::spawn(async move {
            let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1));
            let mut acknowledged: HashMap<String, String> = HashMap::new();
            let (mut gets, mut sets) = (0, 0);
            for op in 0..OPS_PER_CLIENT {
                // Keys are shared in name layout but owned by one client, so the
                // expected value is known exactly.
                let key = format!("client-{id}/key-{}", rng.next() % KEYS_PER_CLIENT);
                if rng.next().is_multiple_of(2) {
                    let value = format!("{id}:{op}:{}", rng.next());
                    set(&mut client, &key, &value).await;
                    acknowledged.insert(key, value);
                    sets += 1;
                } else {
                    match (get(&mut client, &key).await, acknowledged.get(&key)) {
                        (Ok(value), Some(expected)) => assert_eq!(&value, expected, "{key}"),
                        (Err(status), None) => assert_eq!(status.code(), Code::NotFound),
                        (got, expected) => panic!("{key}: got {got:?}, expected {expected:?}"),
                    }
                    gets += 1;
                }
            }
            (gets, sets)
        }));
    }
    let (mut gets, mut sets) = (0, 0);
    for task in tasks {
        let (g, s) = task.await.expect("client task");
        gets += g;
        sets += s;
    }
    assert_eq!(gets + sets, CLIENTS * OPS_PER_CLIENT);
    assert!(gets > 0 && sets > 0, "both operations exercised");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_of_one_key_leave_one_of_their_values() {
    let server = Server::start();
    let mut tasks = Vec::new();
    for id in 0..16 {
        let mut client = server.client().await;
        tasks.push(tokio::spawn(async move {
            for op in 0..100 {
                set(&mut client, "contended", &format!("writer-{id}-op-{op}")).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer task");
    }
    let mut client = server.client().await;
    let value = get(&mut client, "contended").await.expect("contended key");
    assert!(
        value.starts_with("writer-") && value.ends_with("-op-99"),
        "the final value is some writer's last write, got {value:?}"
    );
}
