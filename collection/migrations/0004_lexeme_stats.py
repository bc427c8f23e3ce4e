"""Document frequency of every full-text lexeme, for pruning common words from OR queries (text_index).

ts_stat runs its query text itself, and PostgreSQL 17+ refreshes materialised views with a safe
search_path (pg_catalog only), so the table name inside it is schema-qualified.
"""

from django.db import migrations

CREATE = """
CREATE MATERIALIZED VIEW searchapp_lexemestat AS
    SELECT word, ndoc FROM ts_stat('SELECT text_document FROM {table} WHERE text_document IS NOT NULL')
    UNION ALL
    SELECT '', count(*) FROM {table} WHERE text_document IS NOT NULL;
CREATE UNIQUE INDEX searchapp_lexemestat_word ON searchapp_lexemestat (word);
"""


def create(apps, schema_editor):
    quote = schema_editor.quote_name
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        schema = cursor.fetchone()[0]
        table = f"{quote(schema)}.{quote('searchapp_image')}".replace("'", "''")
        cursor.execute(CREATE.format(table=table))


def drop(apps, schema_editor):
    schema_editor.execute("DROP MATERIALIZED VIEW IF EXISTS searchapp_lexemestat")


class Migration(migrations.Migration):
    dependencies = [("searchapp", "0003_fill_text_documents")]

    operations = [migrations.RunPython(create, drop)]
