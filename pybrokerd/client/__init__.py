"""Client-side helpers (broker URLs for the future STOMP failover client)."""
