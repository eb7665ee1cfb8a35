-- A reviewer may reject a support draft by handing the thread to a specialist (`signoff reject
-- --hand-over`): the customer gets the holding reply and a ticket is opened, with no redraft.
-- Kept with the decision, so a process that dies before writing it into the thread still
-- routes it that way when the thread is resumed. Rows before this migration were not hand-overs.
ALTER TABLE approvals ADD COLUMN handover boolean NOT NULL DEFAULT false;
