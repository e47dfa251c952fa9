"""The context wing: ingestion, chunking, retrieval (term, vector, hybrid), reranking and RAG."""
