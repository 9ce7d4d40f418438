-- Count accepted answers (ARGV[8]) and nothing else.
-- (Runs after limiter_prelude.lua.)
save()
return fmt(now)
