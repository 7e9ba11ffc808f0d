"""The database: tables, sessions, migrations, and the SQL that the layers above share."""
