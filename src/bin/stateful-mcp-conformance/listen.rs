//! What a fixture `subscriptions/listen` stream gets of what it asks for; the streams
//! themselves live in the replica's [`stateful_mcp::mcp::handler::notify::Notifier`].

use rmcp::model::SubscriptionFilter;

/// Most resource URIs one listen stream may ask to follow.
pub(super) const MAX_RESOURCE_SUBSCRIPTIONS: usize = 64;

/// The part of `requested` a stream gets: what the capabilities allow, with at most
/// [`MAX_RESOURCE_SUBSCRIPTIONS`] resource URIs.
pub(super) fn accepted(
    requested: &SubscriptionFilter,
    capabilities: &rmcp::model::ServerCapabilities,
) -> SubscriptionFilter {
    let mut accepted = requested.supported_by(capabilities);
    if let Some(uris) = &mut accepted.resource_subscriptions {
        uris.truncate(MAX_RESOURCE_SUBSCRIPTIONS);
    }
    accepted
}
