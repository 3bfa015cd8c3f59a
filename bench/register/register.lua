-- REGISTER benchmark script: one file, run unchanged by Kamailio (app_lua,
-- see kamailio-register.cfg) and by kemibox (`kemibox run --script`).
--
-- A REGISTER must carry valid digest credentials for a subscriber of its
-- From domain (the realm); without them it gets a 401 challenge. With them
-- its contacts are saved in the "location" table. Every other request is
-- refused here: the benchmark sends nothing else (run.sh sends one OPTIONS
-- before a point to see that the proxy is up, and any answer will do).

function ksr_request_route()
    if KSR.is_REGISTER() then
        local realm = KSR.kx.gete_fhost()
        if KSR.auth_db.auth_check(realm, "subscriber", 1) < 0 then
            KSR.auth.auth_challenge(realm, 0)
            KSR.x.exit()
        end
        KSR.registrar.save("location", 0)
        KSR.x.exit()
    end
    KSR.sl.sl_send_reply(404, "Not here")
end
