"""`/dashboard`: server-rendered pages over the same resolvers as the APIs (issue 14)."""
