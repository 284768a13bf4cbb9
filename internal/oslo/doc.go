// Package oslo speaks OpenStack's oslo.messaging RPC over AMQP 0-9-1, as
// oslo.messaging's "rabbit" driver does in the release neutron-server 21
// (Zed) uses (oslo.messaging 14.0), so that Go code can call a real
// neutron-server and be called by it.
//
// # Wire format
//
// Every message body is JSON with content type application/json and
// encoding utf-8, published persistent (delivery mode 2). The body is the
// version 2.0 envelope
//
//	{"oslo.version": "2.0", "oslo.message": "<the message, JSON-encoded as a string>"}
//
// A request (call or cast) inside it is an object with "method", "args" (an
// object of keyword arguments), optionally "namespace" and "version" (the
// target's), "_unique_id" (a fresh uuid4 hex used to drop duplicates), and
// the caller's request context flattened into "_context_<key>" entries.
// A call adds "_msg_id" (uuid4 hex), "_reply_q" (the caller's reply queue)
// and "_timeout" (the call-monitor timeout, usually null). A call is
// published with the AMQP expiration set to its timeout in milliseconds.
//
// The reply is one message {"result": ..., "failure": null|"<json>",
// "ending": true, "_msg_id": ..., "_unique_id": ...}; "ending": false with a
// null result is a call-monitor heartbeat. A failure is itself a
// JSON-encoded string of {"class", "module", "message", "tb", "args",
// "kwargs"}, the remote exception; it becomes a *RemoteError here.
//
// # Exchanges and queues (defaults: amqp_durable_queues=False,
// amqp_auto_delete=False, rabbit_ha_queues=False)
//
//   - topic exchange <control_exchange> ("neutron" for Neutron), not
//     durable, not auto-delete;
//   - RPC server queues <topic> (shared by every server of the topic) and
//     <topic>.<server>, bound to it with their own names as routing keys,
//     not durable, not auto-delete, no arguments;
//   - fanout exchange <topic>_fanout, not durable, auto-delete, with one
//     queue per server <topic>_fanout_<uuid4 hex> bound with routing key
//     <topic>, not durable, not auto-delete, x-expires 1800000 ms
//     (rabbit_transient_queues_ttl);
//   - the caller's reply queue reply_<uuid4 hex>, on the default exchange
//     only (no exchange of its own), not durable, not auto-delete,
//     x-expires 1800000 ms. Replies are published to the default exchange
//     with the reply queue as routing key and the mandatory flag, and
//     retried for kombu_missing_consumer_retry_timeout (60 s) while the
//     queue does not exist.
//
// The server acknowledges a request before dispatching it (at most once),
// as oslo.messaging does.
//
// # Connections
//
// A Transport owns one AMQP connection and re-establishes it when it drops
// (RabbitMQ restarted, heartbeat missed), with oslo's backoff
// (rabbit_retry_interval 1 s, rabbit_retry_backoff 2 s, rabbit_interval_max
// 30 s), redeclaring every consumer's exchange, queue and binding. Users
// learn about a reconnect from Transport.NotifyReconnect (the L3 agent
// resyncs fully then). A call in flight when the connection drops fails
// with ErrConnectionLost; a publish made while disconnected waits for the
// connection until its context ends. Heartbeats use
// heartbeat_timeout_threshold (60 s) as the negotiated AMQP heartbeat.
package oslo
