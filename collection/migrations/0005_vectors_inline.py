"""Keep vectors inline in the table rows (storage MAIN) instead of pgvector's default EXTERNAL.

A 512-d vector is 2,056 bytes, just over PostgreSQL's 2 kB TOAST threshold, so with EXTERNAL every
vector lived out of line and each exact read cost a TOAST index probe plus two chunk reads
(measured: cosines of 24 images 2.6 ms, docs/performance.md). MAIN keeps them in the row unless a
row could not fit in a page at all; float vectors do not compress, so nothing else changes.

Rows stored before this migration stay out of line until they are written again (``embed
--recompute``, or a new encoder version): rewriting them here would also re-insert every vector
into its HNSW index, which takes minutes per 100,000 rows.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("searchapp", "0004_lexeme_stats")]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE searchapp_imageembedding ALTER COLUMN vector SET STORAGE MAIN;"
            "ALTER TABLE searchapp_captionembedding ALTER COLUMN vector SET STORAGE MAIN;",
            "ALTER TABLE searchapp_imageembedding ALTER COLUMN vector SET STORAGE EXTERNAL;"
            "ALTER TABLE searchapp_captionembedding ALTER COLUMN vector SET STORAGE EXTERNAL;",
        )
    ]
