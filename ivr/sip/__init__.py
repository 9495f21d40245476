"""Our SIP user agent's sans-I/O cores: message and uri (RFC 3261 syntax, sharing lexical), sdp (RFC 4566/3264),
transaction (RFC 3261 section 17) and dialog (section 12). The asyncio adapter lives elsewhere."""
