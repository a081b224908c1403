//! [`ReplicatedSessionManager`]: rmcp's `LocalSessionManager` made safe to run behind a
//! round-robin load balancer.
//!
//! What it adds to the local manager:
//! - session ids with 160 random bits from the OS CSPRNG (rmcp's UUIDv4 has 122);
//! - the session is persisted before `initialize` is answered, within the request's
//!   [`Deadline`], and a failed or late write is a 503 (a session limit, a 429;
//!   oversized client metadata, a 400), reported to the edge through the request's
//!   [`RefusalSlot`], so no client holds a session other replicas cannot restore;
//! - it never touches the store in [`SessionManager::has_session`] (rmcp gives it no
//!   request there): the edge slides the stored session's expiry on every request and
//!   closes the local copy of one that expired elsewhere ([`ReplicatedSessionManager::close_local`]);
//! - the event store is used for 2025-era streams only: [`SessionManager::event_store`]
//!   returns `None`, so rmcp's 2026-07-28 path never persists a response stream and a
//!   dropped response still cancels its handler;
//! - the replica that creates a session holds it under a lease (see `leases.rs`), so
//!   other replicas forward its requests here;
//! - each session runs in its own `LocalSessionManager` whose event store is bound to
//!   that session ([`SessionEvents`]): rmcp names only the stream when it
//!   stores an event and resumes whatever stream a `Last-Event-ID` names, so a store
//!   shared by all sessions could not tell whose stream a client asks for;
//! - beside each worker it keeps what the replica knows of the session ([`LocalSession`]:
//!   its owner, how long the lease and the stored session are known to last, its open
//!   streams and last activity), so the edge serves the holder's requests without a
//!   touch ([`ReplicatedSessionManager::serve_without_touch`]), the keeper slides the
//!   expiry of the sessions served that way ([`ReplicatedSessionManager::renewals`]),
//!   and a worker idle for `session.local_idle_secs` is closed
//!   ([`ReplicatedSessionManager::close_idle`]): the session stays in the store, and its
//!   next request restores a worker. Nothing is kept per session beyond its worker's
//!   life, and the memory of closed workers is handed back to the system (`memory.rs`).

use std::{collections::HashMap, sync::Arc};

use futures::{Stream, StreamExt};
use rmcp::{
    model::{
        ClientJsonRpcMessage, ClientNotification, ClientRequest, GetExtensions,
        ServerJsonRpcMessage,
    },
    transport::{
        WorkerTransport,
        streamable_http_server::session::{
            EventStore, RestoreOutcome, ServerSseMessage, SessionId, SessionManager,
            SessionRestoreMarker,
            local::{
                EventId as LocalEventId, LocalSessionHandle, LocalSessionManager,
                LocalSessionManagerError, LocalSessionWorker, SessionConfig,
                SessionError as WorkerError,
            },
        },
    },
};

use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use self::{
    local::{Clock, LocalSession, StoreHealth, millis},
    memory::Trimmer,
};
use crate::{
    auth::Principal,
    metrics::Metrics,
    sessions::{Lease, NewSession, SessionError, Sessions},
};
use crate::{
    events::{RedisEventStore, RedisEventStoreError},
    mcp::{
        error::{DomainErrors, EdgeError, RefusalSlot},
        event_store::SessionEvents,
        extensions::Deadline,
    },
};

mod local;
mod memory;

/// How long a request waits for a session's replayed handshake another request runs.
const HANDSHAKE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Errors of [`ReplicatedSessionManager`]. rmcp logs them (at WARN and ERROR, whatever
/// the filter says of this crate), so none names a session: ids are bearer credentials.
#[derive(Debug, thiserror::Error)]
pub enum ReplicatedSessionError {
    /// No worker here for the session of this fingerprint.
    #[error("session not served here (fingerprint {0})")]
    NotFound(String),
    /// The local session manager failed (never for an unknown session: that is
    /// [`ReplicatedSessionError::NotFound`], whose message would name the session).
    #[error(transparent)]
    Local(LocalSessionManagerError),
    /// The shared session store failed; the request should be retried.
    #[error("session store unavailable: {0}")]
    Store(SessionError),
    /// The local manager refused to create a session under our id.
    #[error("could not create a local session")]
    Create,
    /// A stream could not be resumed from the event store (rmcp then answers with an
    /// empty stream).
    #[error(transparent)]
    Events(#[from] RedisEventStoreError),
    /// The shared session store did not finish in time for the request's deadline.
    #[error("session store too slow for the request's deadline")]
    Deadline,
}

impl From<LocalSessionManagerError> for ReplicatedSessionError {
    fn from(error: LocalSessionManagerError) -> Self {
        match error {
            LocalSessionManagerError::SessionNotFound(id) => {
                Self::NotFound(crate::ids::fingerprint(&id))
            }
            error => Self::Local(error),
        }
    }
}

impl From<WorkerError> for ReplicatedSessionError {
    fn from(error: WorkerError) -> Self {
        Self::Local(error.into())
    }
}

/// One session served here: its worker's local manager (see the module docs for why one
/// per session) and what the replica knows of it.
struct Local {
    manager: Arc<LocalSessionManager>,
    session: Arc<LocalSession>,
}

/// A `SessionManager` over one rmcp `LocalSessionManager` per session and the shared
/// [`Sessions`].
pub(crate) struct ReplicatedSessionManager {
    /// The sessions this replica serves.
    locals: tokio::sync::RwLock<HashMap<SessionId, Local>>,
    /// Sessions whose worker exists but has not finished its (replayed) handshake:
    /// requests for them wait in [`SessionManager::has_session`] until it has, as rmcp
    /// would make them wait for a restore it knew was running.
    starting: std::sync::Mutex<HashMap<SessionId, tokio::sync::watch::Sender<bool>>>,
    config: SessionConfig,
    /// `None` without the Redis backend or with `events.enabled = false`.
    events: Option<Arc<RedisEventStore>>,
    sessions: Sessions,
    metrics: Metrics,
    /// Answers (and counts) the store's refusals.
    errors: DomainErrors,
    /// The lease this replica takes on the sessions it creates.
    lease: Lease,
    /// Fired when the replica starts draining: it then creates sessions without
    /// holding them, so the next request on any other replica takes them, and serves
    /// none without a touch.
    draining: CancellationToken,
    /// The clock of the [`LocalSession`] times.
    clock: Clock,
    /// Whether the store has failed this replica since the keeper's last renewal.
    store: StoreHealth,
    /// When to hand the memory of closed workers back to the system.
    trimmer: Trimmer,
}

impl ReplicatedSessionManager {
    /// Serves sessions with `config` (keep-alive, retry), their streams stored in
    /// `events` when given, over the shared `sessions` (whose settings give the idle
    /// time of a worker); new sessions are held under `lease` until `draining` fires.
    pub(crate) fn new(
        config: SessionConfig,
        events: Option<Arc<RedisEventStore>>,
        sessions: Sessions,
        metrics: Metrics,
        lease: Lease,
        draining: CancellationToken,
    ) -> Self {
        Self {
            locals: tokio::sync::RwLock::default(),
            starting: std::sync::Mutex::default(),
            config,
            events,
            sessions,
            errors: DomainErrors::new(metrics.clone()),
            metrics,
            lease,
            draining,
            clock: Clock::new(),
            store: StoreHealth::default(),
            trimmer: Trimmer::default(),
        }
    }

    /// The ids of the sessions this replica holds a worker for.
    pub(crate) async fn local_ids(&self) -> Vec<String> {
        let locals = self.locals.read().await;
        locals.keys().map(|id| id.to_string()).collect()
    }

    /// Closes this replica's copy of session `id`, if it has one.
    pub(crate) async fn close_local(&self, id: &str) {
        let _ = self.close_session(&SessionId::from(id)).await;
    }

    /// Hands the memory of the workers closed lately back to the system, once enough
    /// were (see `memory.rs`).
    pub(crate) async fn release_memory(&self) {
        let left = self.locals.read().await.len();
        if self.trimmer.due(left) {
            memory::release_freed_memory().await;
        }
    }

    /// The local manager and record of session `id`, cloned out so no lock is held
    /// while the session's worker answers.
    async fn local(
        &self,
        id: &SessionId,
    ) -> Result<(Arc<LocalSessionManager>, Arc<LocalSession>), ReplicatedSessionError> {
        self.locals
            .read()
            .await
            .get(id)
            .map(|local| (local.manager.clone(), local.session.clone()))
            .ok_or_else(|| ReplicatedSessionError::NotFound(crate::ids::fingerprint(id)))
    }

    /// The worker handle and record of session `id`, for the calls that return a
    /// stream: a stream from a local manager's method borrows that manager, one built
    /// on the handle's receiver owns all it needs.
    async fn handle(
        &self,
        id: &SessionId,
    ) -> Result<(LocalSessionHandle, Arc<LocalSession>), ReplicatedSessionError> {
        let (local, session) = self.local(id).await?;
        let handle = local.sessions.read().await.get(id).cloned();
        handle
            .map(|handle| (handle, session))
            .ok_or_else(|| ReplicatedSessionError::NotFound(crate::ids::fingerprint(id)))
    }

    /// Starts a worker for session `id`, `stored` already or not yet (a new session).
    async fn start_worker(
        &self,
        id: SessionId,
        stored: bool,
    ) -> Result<RestoreOutcome<WorkerTransport<LocalSessionWorker>>, ReplicatedSessionError> {
        let mut locals = self.locals.write().await;
        if locals.contains_key(&id) {
            // A concurrent request already restored this session.
            return Ok(RestoreOutcome::AlreadyPresent);
        }
        let mut local = LocalSessionManager::default();
        local.session_config = self.config.clone();
        if let Some(events) = &self.events {
            local = local.with_event_store(Arc::new(SessionEvents::new(events, id.as_ref())));
        }
        // `restore_session` is the local manager's way to start a worker under an id
        // chosen by the caller.
        let outcome = local.restore_session(id.clone()).await?;
        self.starting_lock()
            .insert(id.clone(), tokio::sync::watch::channel(false).0);
        let local = Local {
            manager: Arc::new(local),
            session: Arc::new(LocalSession::new(self.clock.now(), stored)),
        };
        locals.insert(id, local);
        self.metrics.local_sessions.set(gauge(locals.len()));
        Ok(outcome)
    }

    /// `e`, from session `id`'s worker; a worker that has quit (rmcp's own keep-alive,
    /// or a fatal error) is dropped, so the session's next request restores a new one.
    async fn worker_failed(&self, id: &SessionId, e: WorkerError) -> ReplicatedSessionError {
        if matches!(e, WorkerError::SessionServiceTerminated) {
            let _ = self.close_session(id).await;
        }
        e.into()
    }

    /// `stream`, counted as open in `session` (if any) until it is dropped.
    fn tracked<S: Stream<Item = ServerSseMessage> + Send + Sync + 'static>(
        &self,
        session: Option<Arc<LocalSession>>,
        stream: S,
    ) -> impl Stream<Item = ServerSseMessage> + Send + Sync + 'static {
        let open = session.map(|session| {
            session.stream_opened(self.clock.now());
            OpenStream {
                session,
                clock: self.clock,
            }
        });
        stream.inspect(move |_| {
            let _open = &open;
        })
    }

    fn starting_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<SessionId, tokio::sync::watch::Sender<bool>>> {
        self.starting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Session `id`'s worker finished its handshake: requests waiting for it go on.
    fn started(&self, id: &SessionId) {
        if let Some(ready) = self.starting_lock().remove(id) {
            ready.send_replace(true);
        }
    }

    /// Reports `e` to the edge through the request's slot.
    fn refuse(&self, slot: Option<RefusalSlot>, e: SessionError) -> ReplicatedSessionError {
        let refusal = self.errors.transport(&e);
        if let Some(slot) = slot {
            slot.set(refusal);
        }
        ReplicatedSessionError::Store(e)
    }
}

/// Counts a response stream as open in its session until dropped.
struct OpenStream {
    session: Arc<LocalSession>,
    clock: Clock,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.session.stream_closed(self.clock.now());
    }
}

impl SessionManager for ReplicatedSessionManager {
    type Error = ReplicatedSessionError;
    type Transport = WorkerTransport<LocalSessionWorker>;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        let id: SessionId = crate::ids::mint().into();
        // Not stored until its `initialize` is answered.
        match self.start_worker(id.clone(), false).await? {
            RestoreOutcome::Restored(transport) => Ok((id, transport)),
            _ => Err(ReplicatedSessionError::Create),
        }
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        // A restore replays `initialize` from the stored record: nothing new to persist.
        let params = match &message {
            ClientJsonRpcMessage::Request(req)
                if req
                    .request
                    .extensions()
                    .get::<SessionRestoreMarker>()
                    .is_none() =>
            {
                match &req.request {
                    ClientRequest::InitializeRequest(init) => Some(init.params.clone()),
                    _ => None,
                }
            }
            _ => None,
        };
        let slot = from_request::<RefusalSlot>(&message);
        let principal = from_request::<Principal>(&message);
        let deadline = from_request::<Deadline>(&message);
        let (local, session) = self.local(id).await?;
        session.active(self.clock.now());
        let response = local.initialize_session(id, message).await?;
        if params.is_some() {
            // A new session: its client sends nothing else before this answer.
            self.started(id);
        }
        let (Some(params), ServerJsonRpcMessage::Response(_)) = (params, &response) else {
            return Ok(response);
        };
        // The edge authenticates every request before rmcp sees it.
        let principal = principal.unwrap_or_else(Principal::anonymous);
        let lease = (!self.draining.is_cancelled()).then(|| self.lease.clone());
        let sent = self.clock.now();
        let create = self.sessions.create(NewSession {
            id: Some(id.to_string()),
            principal: principal.as_str().to_owned(),
            client_info: serde_json::to_value(&params.client_info).ok(),
            transport: serde_json::to_value(&params).ok(),
            retry: None,
            lease: lease.clone(),
        });
        // Its writes (one script on a single node, three round trips on Redis Cluster)
        // spend the request's deadline. Writes cut short leave what a crash between them
        // would: a reservation that lapses, or a session no client knows of, which
        // expires.
        let persisted = match deadline {
            Some(deadline) => deadline.bound(create).await,
            None => Some(create.await),
        };
        match persisted {
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::warn!(error = %e, "could not persist new session");
                let _ = self.close_session(id).await;
                return Err(self.refuse(slot, e));
            }
            None => {
                tracing::warn!("new session not persisted within the request's deadline");
                self.metrics.store_error("transport");
                self.metrics.deadline_expired("session_create");
                let _ = self.close_session(id).await;
                if let Some(slot) = slot {
                    slot.set(EdgeError::DeadlineExceeded);
                }
                return Err(ReplicatedSessionError::Deadline);
            }
        }
        session.confirmed(
            principal.as_str(),
            lease.map(|l| sent.saturating_add(millis(l.ttl))),
            sent.saturating_add(millis(self.sessions.limits().timeout())),
            self.clock.now(),
        );
        self.metrics.sessions_created.inc();
        Ok(response)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        // The edge already confirmed the stored session for this request.
        if !self.locals.read().await.contains_key(id) {
            return Ok(false);
        }
        // A worker another request is restoring: rmcp serialises restores only while it
        // runs one itself, so without this wait a second request would reach a worker
        // still waiting for its replayed `initialize`, and the worker would quit.
        let waiting = self.starting_lock().get(id).map(|ready| ready.subscribe());
        if let Some(mut ready) = waiting {
            let started = tokio::time::timeout(HANDSHAKE_WAIT, ready.wait_for(|r| *r)).await;
            return Ok(matches!(started, Ok(Ok(_))));
        }
        Ok(true)
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        // Local only: rmcp also calls this when a session worker idles out here, while
        // other replicas may still be serving the session. An HTTP DELETE removes the
        // stored record through the `SessionStore`.
        // Requests waiting for its handshake give up (404).
        self.starting_lock().remove(id);
        let local = {
            let mut locals = self.locals.write().await;
            let local = locals.remove(id);
            self.metrics.local_sessions.set(gauge(locals.len()));
            local
        };
        if local.is_some() {
            self.trimmer.closed(1);
        }
        // Never an error: rmcp logs a failed close with the session's id in full.
        if let Some(local) = local
            && let Err(e) = local.manager.close_session(id).await
        {
            tracing::debug!(
                session = %crate::ids::fingerprint(id),
                error = %ReplicatedSessionError::from(e),
                "a closed session's worker did not stop cleanly"
            );
        }
        Ok(())
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let slot = from_request::<RefusalSlot>(&message);
        let (handle, session) = self.handle(id).await?;
        let receiver = match handle.establish_request_wise_channel().await {
            Ok(receiver) => receiver,
            // The stream's priming event could not be stored: the store is down (rmcp
            // itself would answer a bare 500). A request stream's priming event is
            // written only past the event store's cap of open streams (below it its id
            // is minted without a write); the next requests touch the session again.
            Err(WorkerError::EventStore(e)) => {
                tracing::warn!(error = %e, "could not store a stream's first event");
                self.store_failed();
                if let Some(slot) = slot {
                    self.metrics.store_error("transport");
                    slot.set(EdgeError::Unavailable);
                }
                return Err(WorkerError::EventStore(e).into());
            }
            Err(e) => return Err(self.worker_failed(id, e).await),
        };
        // Open from here: the worker may run the request for as long as it likes.
        let stream = self.tracked(Some(session), ReceiverStream::new(receiver.inner));
        if let Err(e) = handle.push_message(message, receiver.http_request_id).await {
            return Err(self.worker_failed(id, e).await);
        }
        Ok(stream)
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        // The replayed handshake ends with the `initialized` notification the restore
        // sends after `initialize`: the worker serves requests from then on.
        let replayed_initialized = matches!(
            &message,
            ClientJsonRpcMessage::Notification(n)
                if matches!(n.notification, ClientNotification::InitializedNotification(_))
                    && n.notification.extensions().get::<SessionRestoreMarker>().is_some()
        );
        let (local, session) = self.local(id).await?;
        session.active(self.clock.now());
        match local.accept_message(id, message).await {
            Ok(()) => {}
            Err(LocalSessionManagerError::SessionError(e)) => {
                return Err(self.worker_failed(id, e).await);
            }
            Err(e) => return Err(e.into()),
        }
        if replayed_initialized {
            self.started(id);
        }
        Ok(())
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let (handle, session) = self.handle(id).await?;
        match handle.establish_common_channel().await {
            Ok(receiver) => Ok(self.tracked(Some(session), ReceiverStream::new(receiver.inner))),
            Err(e) => Err(self.worker_failed(id, e).await),
        }
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        if let Some(events) = &self.events {
            // The session is part of every stream's key: another session's event id is
            // an unknown one, and rmcp answers it with an empty stream. A replay needs no
            // worker here, but one that runs is not idle while the stream is open.
            let session = self.local(id).await.ok().map(|(_, session)| session);
            let replay = SessionEvents::new(events, id.as_ref())
                .replay(&last_event_id)
                .await?;
            return Ok(self.tracked(session, replay).left_stream());
        }
        let last_event_id: LocalEventId = last_event_id
            .parse()
            .map_err(LocalSessionManagerError::from)?;
        let (handle, session) = self.handle(id).await?;
        match handle.resume(last_event_id).await {
            Ok(receiver) => Ok(self
                .tracked(Some(session), ReceiverStream::new(receiver.inner))
                .right_stream()),
            Err(e) => Err(self.worker_failed(id, e).await),
        }
    }

    async fn restore_session(
        &self,
        id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        // The edge restores only a session it found in the store.
        self.start_worker(id, true).await
    }

    fn event_store(&self) -> Option<Arc<dyn EventStore>> {
        None
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A value the edge put in the extensions of the HTTP request behind `message` (rmcp
/// copies the request's `http::request::Parts` into the message).
fn from_request<T: Clone + Send + Sync + 'static>(message: &ClientJsonRpcMessage) -> Option<T> {
    match message {
        ClientJsonRpcMessage::Request(req) => req
            .request
            .extensions()
            .get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<T>())
            .cloned(),
        _ => None,
    }
}
