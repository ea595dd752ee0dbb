"""Connection limits of one listener (--max-connections, --max-connections-per-address),
counted per listener as ActiveMQ counts maximumConnections per transport connector."""


class ConnectionLimits:
    def __init__(self, max_connections: int = 0, max_per_address: int = 0):
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.connections = 0
        self.per_address: dict[str, int] = {}

    def refusal(self, address: str):
        """Why a new connection from `address` is refused, or None."""
        if self.max_connections and self.connections >= self.max_connections:
            return ("Maximum connections (%d) reached: the broker refuses new connections "
                    "until some close (--max-connections)" % self.max_connections)
        limit = self.max_per_address
        if limit and self.per_address.get(address, 0) >= limit:
            return ("Maximum connections from %s (%d) reached (--max-connections-per-address)"
                    % (address, limit))
        return None

    def count(self, address: str, delta: int) -> None:
        self.connections += delta
        n = self.per_address.get(address, 0) + delta
        if n > 0:
            self.per_address[address] = n
        else:
            self.per_address.pop(address, None)
