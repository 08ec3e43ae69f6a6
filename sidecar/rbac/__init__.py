"""Role-based access control: the policy file, the route table, hot reload and rate limits."""
