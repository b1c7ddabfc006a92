"""A generated sample shared by the generator's tests: 3k customers x 200 days, made once (about 4 s)."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from pipelines.synthetic import generate
from pipelines.synthetic.write import TABLE_FILES

TABLES = (*TABLE_FILES, "ground_truth")


@pytest.fixture(scope="session")
def sample(tmp_path_factory):
    """3k customers x 200 days, generated once for every test module here."""
    out = tmp_path_factory.mktemp("generated")
    return generate(3000, 200, seed=11, out=out, progress=False)


@pytest.fixture(scope="session")
def labelled(sample):
    """Ground-truth rows whose 60-day future lies inside the window, with realised outcomes and behaviour."""
    con = duckdb.connect()
    for t in TABLES:
        con.execute(f"create view {t} as select * from read_parquet('{sample.files[t]}')")
    end = pd.Timestamp(sample.end, tz="UTC") + pd.Timedelta(days=1)
    return con.execute(
        """
        select gt.*,
          exists(select 1 from orders o where o.customer_id = gt.customer_id
                 and o.ordered_at >= gt.as_of and o.ordered_at < gt.as_of + interval 60 day) as order_60d,
          exists(select 1 from orders o where o.customer_id = gt.customer_id
                 and o.ordered_at >= gt.as_of and o.ordered_at < gt.as_of + interval 14 day) as order_14d,
          exists(select 1 from orders o where o.customer_id = gt.customer_id
                 and o.ordered_at < gt.as_of and o.ordered_at >= gt.as_of - interval 90 day) as active,
          (select count(*) from complaints c where c.customer_id = gt.customer_id
                 and c.opened_at < gt.as_of and c.opened_at >= gt.as_of - interval 30 day) as complaints_30d,
          (select count(*) from page_views v where v.customer_id = gt.customer_id
                 and v.viewed_at < gt.as_of and v.viewed_at >= gt.as_of - interval 7 day) as page_views_7d
        from ground_truth gt
        where gt.as_of + interval 60 day <= ?
        """,
        [end.to_pydatetime()],
    ).df()
