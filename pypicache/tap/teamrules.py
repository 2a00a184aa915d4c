# -*- test-case-name: tests.test_rules -*-
"""The team's decisions as built at start-up: the block list, private
projects' statuses, upstream withdrawals and local yanks, as one chain of
rules (:mod:`pypicache.proxy.rules`) with the records they read."""

from collections.abc import Callable, Sequence
from typing import Any

import attrs

from pypicache.concurrency import RunBlocking, result_now
from pypicache.proxy.blocklist import with_block_list
from pypicache.proxy.projectstatus import STATUS_FOLDER, Statuses, StatusRule
from pypicache.proxy.rules import Rules
from pypicache.proxy.withdrawals import WITHDRAWN, Withdrawals, WithdrawnRule
from pypicache.proxy.yanks import LocalYanks
from pypicache.storage.records import StoredFile
from pypicache.storage.shared import SharedDocs
from pypicache.storage.yanks import YankRecords


@attrs.frozen
class TeamRules:
    """The rules of the default upstream's views and what they read."""

    rules: Rules
    yanks: LocalYanks
    local_yanks: YankRecords
    withdrawals: Withdrawals
    withdrawn: WithdrawnRule
    statuses: Statuses

    def for_named(self, rules: Rules, block: Sequence[str]) -> Rules:
        """A named upstream's ``rules`` with the block list and the yanks."""
        return with_block_list(rules, block).added(self.yanks)


def team_rules(
    store: Any,
    reactor: Any,
    run_blocking: RunBlocking,
    rules: Rules,
    block: Sequence[str],
    withdrawn: str,
) -> TeamRules:
    """``rules`` with the block list, statuses, withdrawals and local yanks,
    their records in the state of ``store`` (an
    :class:`~pypicache.storage.state.IState`: the cache folder, or the bucket
    every daemon on it shares)."""
    local_yanks = YankRecords(store)
    yanks = LocalYanks(local_yanks)
    withdrawals = Withdrawals(SharedDocs(store, WITHDRAWN, reactor))
    withdrawn_rule = WithdrawnRule(withdrawals, withdrawn)
    statuses = Statuses(SharedDocs(store, STATUS_FOLDER, reactor))
    is_private: Callable[[str], bool] = (
        store.private_now  # no Deferred per file served
        if getattr(store, "answers_now", False)
        else lambda p: result_now(store.is_private(p))
    )
    chained = (
        with_block_list(rules, block)
        .added(StatusRule(statuses, is_private))
        .added(withdrawn_rule)
        .added(yanks)
    )
    return TeamRules(chained, yanks, local_yanks, withdrawals, withdrawn_rule, statuses)


def chained(
    *hooks: Callable[[StoredFile], None] | None,
) -> Callable[[StoredFile], None]:
    """One ``on_stored`` hook calling each of ``hooks`` (``None`` ones left out)."""
    kept = [h for h in hooks if h is not None]

    def stored(stored_file: StoredFile) -> None:
        for hook in kept:
            hook(stored_file)

    return stored
